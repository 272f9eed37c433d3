"""What a message asks of the bot: a pure function from message content to a request.

The spellings of docs/spec.md §2, in the order they are tried:
1. the MSC4332 `org.matrix.msc4332.command` block a client sends for a command it offered;
2. the text `!cmd …`, `@cmd …` or `/cmd …` (Element sends `//cmd` as the text `/cmd`),
   optionally after a mention of the bot (`Doryo: !ping`);
3. a message that mentions the bot, replies to one of its messages, or is in a DM with it: `@ask`.

Unknown commands are only answered when the message was clearly for this bot (mention, DM, or an
MSC4332 block): a `!word` in a shared room may well be for another bot.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MSC4332_COMMAND = "org.matrix.msc4332.command"
SIGILS = ("!", "@", "/")


@dataclass(frozen=True, slots=True)
class Ask:
    question: str


@dataclass(frozen=True, slots=True)
class Act:
    instruction: str


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    """The command's words, lower case: "ping", "ws create"."""
    text: str = ""
    """Everything after the command's words, as typed (leading/trailing space removed)."""
    args: tuple[str, ...] = ()
    """`text` split like a shell would (quotes group words; unbalanced quotes: on spaces)."""


@dataclass(frozen=True, slots=True)
class UnknownCommand:
    word: str


Request = Ask | Act | Command | UnknownCommand


@dataclass(frozen=True, slots=True)
class Addressing:
    """What the parser must know besides the content; the dispatcher finds it out."""

    bot_user_id: str
    bot_names: Sequence[str] = ()
    """Display name and other names a person may type before a command ("Doryo: !ping")."""
    is_direct: bool = False
    """The room is a DM between the sender and the bot."""
    reply_to_bot: bool = False
    """The message replies to one of the bot's messages."""
    commands: Collection[str] = field(default_factory=frozenset)
    """Every known command name ("ping", "ws create", ...)."""


def number(text: str) -> int | None:
    """A whole number as people type it, in ASCII digits. str.isdigit() also accepts "²" and
    other digit-like characters, on which int() fails: those are not numbers here."""
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) < 18 else None


def parse(content: Mapping[str, Any], addressing: Addressing) -> Request | None:
    """The request a message content makes of the bot, or None if it is not for the bot."""
    mentions = _mentioned_users(content)
    mentioned = addressing.bot_user_id in mentions
    block = content.get(MSC4332_COMMAND)
    if isinstance(block, Mapping):
        if mentions and not mentioned:
            return None  # the client addressed another bot
        from_block = _from_msc4332(block, addressing)
        if from_block is not None:
            return from_block

    body = content.get("body")
    if not isinstance(body, str):
        return None
    text = _strip_reply_fallback(body, content).strip()
    if mentioned:
        text = _strip_leading_mention(text, addressing, loose=True)
    else:
        # Clients without intentional mentions: a message that starts with the bot's ID.
        stripped = _strip_leading_mention(text, addressing, loose=False)
        mentioned, text = stripped != text, stripped
    addressed = mentioned or addressing.is_direct or addressing.reply_to_bot

    command = _from_text(text, addressing, addressed=addressed)
    if command is not None:
        return command
    if addressed and text:
        return Ask(text)
    return None


def _mentioned_users(content: Mapping[str, Any]) -> list[str]:
    mentions = content.get("m.mentions")
    if not isinstance(mentions, Mapping):
        return []
    user_ids = mentions.get("user_ids")
    if not isinstance(user_ids, list):
        return []
    return [u for u in user_ids if isinstance(u, str)]


def _strip_reply_fallback(body: str, content: Mapping[str, Any]) -> str:
    """Drop the `> <@user> quoted text` lines older clients put before a reply's own text."""
    relates = content.get("m.relates_to")
    if not isinstance(relates, Mapping) or "m.in_reply_to" not in relates:
        return body
    lines = body.split("\n")
    if not lines or not lines[0].startswith("> "):
        return body
    while lines and lines[0].startswith(">"):
        lines.pop(0)
    return "\n".join(lines)


def _strip_leading_mention(text: str, addressing: Addressing, *, loose: bool) -> str:
    """`Doryo: !ping`, `@doryo:example.org ping` → the rest, when it starts with the bot's name.

    The bot's user ID and `@localpart` always count; `loose` adds its display names and bare
    localpart (only when the message mentions the bot: "doryo" alone could be just a word).
    """
    localpart = addressing.bot_user_id[1:].split(":", 1)[0]
    extra = [localpart, *addressing.bot_names] if loose else []
    names = [addressing.bot_user_id, f"@{localpart}", *extra]
    for name in sorted({n for n in names if n}, key=len, reverse=True):
        pattern = re.compile(rf"^{re.escape(name)}(?![\w.-])[:,]?\s*", re.IGNORECASE)
        stripped, count = pattern.subn("", text, count=1)
        if count:
            return stripped
    return text


def _split(text: str) -> tuple[str, ...]:
    try:
        return tuple(shlex.split(text))
    except ValueError:
        return tuple(text.split())


def _from_text(text: str, addressing: Addressing, *, addressed: bool) -> Request | None:
    if text.startswith("//"):
        text = text[1:]  # a client that did not turn `//cmd` into `/cmd`
    if not text.startswith(SIGILS):
        return None
    first, _, rest = text[1:].partition(" ")
    head, newline, tail = first.partition("\n")  # "!ask\nmulti-line question"
    if newline:
        first, rest = head, f"{tail} {rest}" if rest else tail
    word = first.lower()
    if not word or not re.fullmatch(r"[a-z][a-z0-9_-]*", word):
        return None  # "! hi", "@alice:example.org", "/", not a command
    return _resolve(word, rest.strip(), addressing, addressed=addressed)


def _resolve(word: str, rest: str, addressing: Addressing, *, addressed: bool) -> Request | None:
    if word == "ask":
        return Ask(rest)
    if word == "act":
        return Act(rest)
    if word not in addressing.commands:
        return UnknownCommand(word) if addressed else None
    sub, sub_rest = (re.split(r"\s+", rest, maxsplit=1) + [""])[:2] if rest else ("", "")
    if sub and f"{word} {sub.lower()}" in addressing.commands:
        name, rest = f"{word} {sub.lower()}", sub_rest.strip()
    else:
        name = word
    return Command(name=name, text=rest, args=_split(rest))


def _from_msc4332(block: Mapping[str, Any], addressing: Addressing) -> Request | None:
    """Rebuild the command text from the block's syntax and argument values."""
    syntax = block.get("syntax")
    if not isinstance(syntax, str):
        return None
    values = block.get("arguments")
    if not isinstance(values, Mapping):
        values = block.get("variables")  # the first draft of MSC4332 called them variables
    values = values if isinstance(values, Mapping) else {}

    def value_of(match: re.Match[str]) -> str:
        name = match[1]
        value = values.get(name, values.get(f"{name}...", ""))
        return _argument_text(value)

    text = re.sub(r"\{([^}]*)\}", value_of, syntax).strip()
    text = text.lstrip("".join(SIGILS))
    word, _, rest = text.partition(" ")
    return _resolve(word.lower(), rest.strip(), addressing, addressed=True)


def _argument_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, Mapping) and isinstance(value.get("id"), str):
        return str(value["id"])  # room_id arguments carry routing: {"id": ..., "via": [...]}
    if isinstance(value, list):
        return " ".join(_argument_text(v) for v in value)
    return ""
