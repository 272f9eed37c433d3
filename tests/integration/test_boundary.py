"""The per-event boundary holds for every kind of event, not only commands: a reaction or an
invite whose handling fails tells the person waiting, once, and the event is marked failed;
where nobody waits (a membership, power levels) the failure is only logged."""

from __future__ import annotations

from typing import Any

import pytest

from bot.app import Doryo
from bot.core.errors import UserError
from tests.conftest import Homeserver
from tests.integration.test_actions import react
from tests.integration.test_e2e_addressing import joined_room
from tests.poll import eventually


def notices(events: list[dict[str, Any]], bot_id: str, text: str) -> list[dict[str, Any]]:
    return [
        e for e in events if e["sender"] == bot_id and text in e.get("content", {}).get("body", "")
    ]


async def state_of(bot: Doryo, event_id: str) -> str | None:
    row = await bot.ctx.db.fetchrow("SELECT state FROM inbox_events WHERE event_id = $1", event_id)
    return row["state"] if row else None


async def test_a_reaction_that_fails_tells_the_person_once(
    homeserver: Homeserver, bot: Doryo, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, room = await joined_room(homeserver, bot)
    bot_id = bot.config.bot_user_id
    said = await alice.send_text(room, "a message to react to")

    async def broken(*args: Any) -> None:
        raise RuntimeError("a bug in the reaction's handling")

    monkeypatch.setattr(bot.ctx.actions, "on_reaction", broken)
    reaction = await react(alice, room, said, "👍")
    [told] = await alice.wait_for(
        room, lambda e: bool(notices([e], bot_id, "Something went wrong on my side"))
    )
    assert "reference" in told["content"]["body"]

    async def failed() -> bool:
        return await state_of(bot, reaction) == "failed"

    await eventually(failed, timeout=10)

    async def refused(*args: Any) -> None:
        raise UserError("Only the host can do that here.")

    monkeypatch.setattr(bot.ctx.actions, "on_reaction", refused)
    second = await react(alice, room, said, "🎉")
    await alice.wait_for(room, lambda e: bool(notices([e], bot_id, "Only the host can")))

    async def done() -> bool:
        return await state_of(bot, second) == "done"

    await eventually(done, timeout=10)
    await bot.idle(10)
    await alice.sync_once(timeout_ms=0)
    assert len(notices(alice.timeline[room], bot_id, "Something went wrong")) == 1


async def test_where_nobody_waits_a_failure_is_only_logged(
    homeserver: Homeserver,
    bot: Doryo,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    alice, room = await joined_room(homeserver, bot)
    bot_id = bot.config.bot_user_id

    async def refused(*args: Any, **kwargs: Any) -> None:
        raise UserError("not for you")

    monkeypatch.setattr(bot.ctx.rooms, "set_members", refused)
    bob = await homeserver.user("bob")
    await alice.invite(room, bob.user_id)
    await bob.join(room)
    await bot.idle(15)
    assert "not for you" in caplog.text
    await alice.sync_once(timeout_ms=0)
    assert not notices(alice.timeline[room], bot_id, "not for you")
