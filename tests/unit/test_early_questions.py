"""Which arriving events are recognised as @ask questions before they are handled: only what
the event alone tells (bot.agent.early), table-driven."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from bot.agent.early import question_of
from bot.commands.catalog import NAMES
from bot.commands.parser import Addressing
from bot.core.router import RouterRules

BOT = "@doryo:example.org"
RULES = RouterRules(
    bot_user_id=BOT,
    namespace=re.compile(r"^@(doryo|doryo_.+):example\.org$"),
    max_command_age_ms=60_000,
)
ADDRESSING = Addressing(bot_user_id=BOT, bot_names=("Doryo",), commands=NAMES)


def message(
    body: str,
    sender: str = "@alice:example.org",
    age_ms: int = 50,
    type_: str = "m.room.message",
    **content: Any,
) -> dict[str, Any]:
    """Kwargs for `event` (built when the test runs: a stale age is measured from then)."""
    return {"body": body, "sender": sender, "age_ms": age_ms, "type_": type_, **content}


def event(body: str, sender: str, age_ms: int, type_: str, **content: Any) -> dict[str, Any]:
    return {
        "type": type_,
        "sender": sender,
        "event_id": "$q",
        "room_id": "!r:example.org",
        "origin_server_ts": time.time_ns() // 1_000_000 - age_ms,
        "content": {"msgtype": "m.text", "body": body, **content},
    }


@pytest.mark.parametrize(
    ("made", "question"),
    [
        (message("@ask when do we launch?"), "when do we launch?"),
        (message("!ask  when do we launch? "), "when do we launch?"),
        (message("/ask when"), "when"),
        (message(f"{BOT}: when do we launch?"), "when do we launch?"),
        (
            message("when do we launch?", **{"m.mentions": {"user_ids": [BOT]}}),
            "when do we launch?",
        ),
        # Not questions, or not from someone the bot answers:
        (message("@ask"), None),
        (message("!ping"), None),
        (message("@act open an issue"), None),
        (message("when do we launch?"), None),  # a DM would make it one: told when handled
        (message("@ask hi", sender="@doryo_falcon:example.org"), None),
        (message("@ask hi", age_ms=120_000), None),  # stale: answered with a notice only
        (message("@ask hi", msgtype="m.notice"), None),
        (message("@ask hi", type_="m.room.topic"), None),
    ],
)
def test_question_of(made: dict[str, Any], question: str | None) -> None:
    assert question_of(event(**made), RULES, ADDRESSING) == question
