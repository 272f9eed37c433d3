"""The command parser, table-driven: every spelling of docs/spec.md §2."""

from __future__ import annotations

from typing import Any

import pytest

from bot.commands.catalog import NAMES
from bot.commands.parser import (
    Act,
    Addressing,
    Ask,
    Command,
    Request,
    UnknownCommand,
    parse,
)

BOT = "@doryo:example.org"
OTHER_BOT = "@draupnir:example.org"


def text(body: str, **extra: Any) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": body, **extra}


def mentioning(*users: str) -> dict[str, Any]:
    return {"m.mentions": {"user_ids": list(users)}}


def reply_to(event_id: str = "$replied") -> dict[str, Any]:
    return {"m.relates_to": {"m.in_reply_to": {"event_id": event_id}}}


def block(syntax: str, **arguments: Any) -> dict[str, Any]:
    return {"org.matrix.msc4332.command": {"syntax": syntax, "arguments": arguments}}


ROOM = Addressing(bot_user_id=BOT, bot_names=("Doryo",), commands=NAMES)
DM = Addressing(bot_user_id=BOT, bot_names=("Doryo",), commands=NAMES, is_direct=True)
REPLY = Addressing(bot_user_id=BOT, bot_names=("Doryo",), commands=NAMES, reply_to_bot=True)

CASES: list[tuple[str, dict[str, Any], Addressing, Request | None]] = [
    # The three text spellings.
    ("bang", text("!ping"), ROOM, Command("ping")),
    ("at", text("@ping"), ROOM, Command("ping")),
    ("slash", text("/ping"), ROOM, Command("ping")),
    ("double slash kept by a client", text("//ping"), ROOM, Command("ping")),
    ("upper case", text("!PING"), ROOM, Command("ping")),
    ("surrounding space", text("  !ping  "), ROOM, Command("ping")),
    # ask and act.
    ("ask", text("!ask what did we decide?"), ROOM, Ask("what did we decide?")),
    ("@ask", text("@ask hi"), ROOM, Ask("hi")),
    ("/ask", text("/ask hi"), ROOM, Ask("hi")),
    ("ask with no question", text("!ask"), ROOM, Ask("")),
    ("ask on the next line", text("!ask\nwhat about\nthis?"), ROOM, Ask("what about\nthis?")),
    ("act", text("@act create_task title=Ship"), ROOM, Act("create_task title=Ship")),
    # Arguments and subcommands.
    ("args", text("!help ws"), ROOM, Command("help", "ws", ("ws",))),
    (
        "subcommand",
        text("!ws create Team Rocket"),
        ROOM,
        Command("ws create", "Team Rocket", ("Team", "Rocket")),
    ),
    (
        "quoted argument",
        text('!ws create "Team Rocket"'),
        ROOM,
        Command("ws create", '"Team Rocket"', ("Team Rocket",)),
    ),
    (
        "unbalanced quote",
        text('!ws create "Team'),
        ROOM,
        Command("ws create", '"Team', ('"Team',)),
    ),
    (
        "unknown subcommand goes to the group",
        text("!ws fly"),
        ROOM,
        Command("ws", "fly", ("fly",)),
    ),
    ("group alone", text("!ws"), ROOM, Command("ws")),
    (
        "subcommand, then lines",
        text("!blueprint create\ncode: x\nname: X"),
        ROOM,
        Command("blueprint create", "code: x\nname: X", ("code:", "x", "name:", "X")),
    ),
    (
        "subcommand case",
        text("!Session START topic"),
        ROOM,
        Command("session start", "topic", ("topic",)),
    ),
    # Not commands.
    ("plain text", text("hello everyone"), ROOM, None),
    ("sigil alone", text("!"), ROOM, None),
    ("sigil then space", text("! ping"), ROOM, None),
    ("a user ID", text("@alice:example.org can you look?"), ROOM, None),
    ("unknown command in a shared room", text("!ban @spam:example.org"), ROOM, None),
    ("unknown @word", text("@everyone look"), ROOM, None),
    ("no body", {"msgtype": "m.text"}, ROOM, None),
    ("body not a string", {"msgtype": "m.text", "body": 5}, ROOM, None),
    # Mentions.
    ("mention asks", text("Doryo: what's new?", **mentioning(BOT)), ROOM, Ask("what's new?")),
    (
        "mention mid-sentence",
        text("hey Doryo, ideas?", **mentioning(BOT)),
        ROOM,
        Ask("hey Doryo, ideas?"),
    ),
    ("mention then command", text("Doryo: !ping", **mentioning(BOT)), ROOM, Command("ping")),
    ("mention by id then command", text(f"{BOT} !ping", **mentioning(BOT)), ROOM, Command("ping")),
    ("mention by localpart", text("doryo, status?", **mentioning(BOT)), ROOM, Ask("status?")),
    ("mention of someone else", text("Alice: hi", **mentioning("@alice:example.org")), ROOM, None),
    (
        "mention, unknown command",
        text("Doryo: !fly", **mentioning(BOT)),
        ROOM,
        UnknownCommand("fly"),
    ),
    ("mention only", text("Doryo", **mentioning(BOT)), ROOM, None),
    ("typed user ID without m.mentions", text(f"{BOT} !ping"), ROOM, Command("ping")),
    ("typed @localpart without m.mentions", text("@doryo what now?"), ROOM, Ask("what now?")),
    # Replies to the bot.
    ("reply to the bot", text("and then?", **reply_to()), REPLY, Ask("and then?")),
    (
        "reply fallback stripped",
        text("> <@doryo:example.org> The answer\n\nwhy?", **reply_to()),
        REPLY,
        Ask("why?"),
    ),
    ("reply to someone else", text("and then?", **reply_to()), ROOM, None),
    ("reply with a command", text("!ping", **reply_to()), REPLY, Command("ping")),
    # Direct chats.
    ("DM text asks", text("what is the plan?"), DM, Ask("what is the plan?")),
    ("DM command", text("!ping"), DM, Command("ping")),
    ("DM unknown command", text("!fly"), DM, UnknownCommand("fly")),
    (
        "DM @someone is a question",
        text("@alice:example.org said what?"),
        DM,
        Ask("@alice:example.org said what?"),
    ),
    ("DM empty", text("   "), DM, None),
    # MSC4332 command blocks.
    ("block", text("!ping", **block("ping")), ROOM, Command("ping")),
    (
        "block with argument",
        text("!ws create x", **block("ws create {name}", name="Team Rocket")),
        ROOM,
        Command("ws create", "Team Rocket", ("Team", "Rocket")),
    ),
    (
        "block with variadic users",
        text("!ws invite", **block("ws invite {users}", **{"users...": ["@a:x", "@b:x"]})),
        ROOM,
        Command("ws invite", "@a:x @b:x", ("@a:x", "@b:x")),
    ),
    (
        "block with a room ID object",
        text("", **block("help {command}", command={"id": "!r:x", "via": ["x"]})),
        ROOM,
        Command("help", "!r:x", ("!r:x",)),
    ),
    ("block ask", text("", **block("ask {question}", question="why?")), ROOM, Ask("why?")),
    (
        "first-draft block with variables",
        text(
            "", **{"org.matrix.msc4332.command": {"syntax": "help {c}", "variables": {"c": "ws"}}}
        ),
        ROOM,
        Command("help", "ws", ("ws",)),
    ),
    (
        "block for another bot",
        text("!ban @x:y", **block("ban {user}", user="@x:y"), **mentioning(OTHER_BOT)),
        ROOM,
        None,
    ),
    (
        "block for us, unknown",
        text("!fly", **block("fly"), **mentioning(BOT)),
        ROOM,
        UnknownCommand("fly"),
    ),
    (
        "block without syntax falls back to body",
        text("!ping", **{"org.matrix.msc4332.command": {}}),
        ROOM,
        Command("ping"),
    ),
]


@pytest.mark.parametrize(
    ("content", "addressing", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_parse(content: dict[str, Any], addressing: Addressing, expected: Request | None) -> None:
    assert parse(content, addressing) == expected
