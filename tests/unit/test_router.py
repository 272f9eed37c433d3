"""The router: which events the bot acts on, table-driven."""

from __future__ import annotations

import re
from typing import Any

import pytest

from bot.core.router import (
    BotInvited,
    BotMembership,
    Ignore,
    Message,
    PowerLevelsChanged,
    Route,
    RouterRules,
    StaleMessage,
    route,
)

BOT = "@doryo:example.org"
NOW = 1_700_000_000_000
RULES = RouterRules(
    bot_user_id=BOT,
    namespace=re.compile(r"^@(doryo|doryo_.+):example\.org$"),
    ignore_users=(re.compile(r"^@.*bot:example\.org$"),),
    max_command_age_ms=60_000,
)


def event(
    type_: str = "m.room.message", sender: str = "@alice:example.org", **fields: Any
) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": type_,
        "sender": sender,
        "event_id": "$e",
        "room_id": "!r:example.org",
        "origin_server_ts": NOW - 50,
        "content": {"msgtype": "m.text", "body": "!ping"},
    }
    base.update(fields)
    return base


def member(
    state_key: str, membership: str, sender: str = "@alice:example.org", **content: Any
) -> dict[str, Any]:
    return event(
        "m.room.member", sender, state_key=state_key, content={"membership": membership, **content}
    )


CASES: list[tuple[str, dict[str, Any], type | Route]] = [
    ("a message", event(), Message(50)),
    ("the bot's own message", event(sender=BOT), Ignore),
    ("an agent user's message", event(sender="@doryo_planner:example.org"), Ignore),
    ("an ignored bot", event(sender="@helperbot:example.org"), Ignore),
    ("a notice", event(content={"msgtype": "m.notice", "body": "!ping"}), Ignore),
    ("an emote", event(content={"msgtype": "m.emote", "body": "waves"}), Ignore),
    ("an image", event(content={"msgtype": "m.image", "body": "x.png"}), Ignore),
    (
        "an edit",
        event(
            content={
                "msgtype": "m.text",
                "body": "* !ping",
                "m.relates_to": {"rel_type": "m.replace", "event_id": "$x"},
            }
        ),
        Ignore,
    ),
    ("content not an object", event(content="nope"), Ignore),
    ("body not a string", event(content={"msgtype": "m.text", "body": ["x"]}), Ignore),
    ("a reaction", event("m.reaction", content={}), Ignore),
    ("too old", event(origin_server_ts=NOW - 120_000), StaleMessage(120_000)),
    ("no timestamp", event(origin_server_ts=None), Message(0)),
    ("clock ahead", event(origin_server_ts=NOW + 500), Message(0)),
    ("invited", member(BOT, "invite"), BotInvited("@alice:example.org")),
    # The flag is the inviter's claim: a DM is told by the room's members once the bot is in.
    ("invited to a 'DM'", member(BOT, "invite", is_direct=True), BotInvited("@alice:example.org")),
    ("invited by an ignored bot", member(BOT, "invite", sender="@spambot:example.org"), Ignore),
    ("bot joined", member(BOT, "join", sender=BOT), BotMembership("join")),
    ("bot kicked", member(BOT, "leave"), BotMembership("leave")),
    ("bot banned", member(BOT, "ban"), BotMembership("ban")),
    ("someone else joined", member("@bob:example.org", "join", sender="@bob:example.org"), Ignore),
    (
        "power levels",
        event("m.room.power_levels", state_key="", content={"users": {}}),
        PowerLevelsChanged(),
    ),
]


@pytest.mark.parametrize(("raw", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_route(raw: dict[str, Any], expected: type | Route) -> None:
    result = route(raw, RULES, NOW)
    if isinstance(expected, type):
        assert isinstance(result, expected), result
    else:
        assert result == expected
