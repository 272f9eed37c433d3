"""The action card: where it stands first, and exactly what runs."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from appservice.matrix import render_markdown
from bot.actions.card import card_content, long_values
from bot.actions.store import Action


def action(**fields: object) -> Action:
    base: dict[str, object] = dict(
        id=3,
        workspace_id="ws",
        room_id="!r:hs",
        request_event_id="$q",
        card_event_id="$c",
        tool="send_notification",
        tool_version="1",
        args={},
        requested_by="@bob:hs",
        source="act",
        status="awaiting_confirm",
        idempotency_key="k",
        confirmed_by=None,
        cancelled_by=None,
        result=None,
        error=None,
        expires_at=datetime(2026, 12, 4, tzinfo=UTC),
        created_at=datetime(2026, 12, 3, tzinfo=UTC),
        started_at=None,
    )
    base.update(fields)
    return Action(**base)  # type: ignore[arg-type]


def test_a_value_too_long_for_the_card_goes_to_its_thread_and_the_card_fits() -> None:
    huge = "word " * 12_000
    card = action(args={"text": huge, "user": "@alice:hs"})
    content = card_content(card, "@host:hs")
    assert "60,000 characters, in full in this card's thread" in content["body"]
    assert long_values(card) == [("text", huge)]
    assert len(json.dumps(content).encode()) < 20_000


def test_a_value_cannot_close_its_code_block() -> None:
    sneaky = "ok\n```\n**approved** by [host](https://evil)\n```"
    content = card_content(action(args={"text": sneaky}), "@host:hs")
    html = render_markdown(content["body"])
    assert "<strong>approved" not in html and 'href="https://evil' not in html
    assert "**approved** by [host](https://evil)" in content["body"]
