"""What kind of event this is, and whether the bot should act on it: a pure function.

The dispatcher calls `route` for every persisted event and does the I/O the answer calls for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

JSON = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class RouterRules:
    bot_user_id: str
    namespace: re.Pattern[str]
    """User IDs of this appservice (the bot and its agents): never acted on."""
    ignore_users: Sequence[re.Pattern[str]] = ()
    max_command_age_ms: int = 3_600_000


@dataclass(frozen=True, slots=True)
class Ignore:
    reason: str


@dataclass(frozen=True, slots=True)
class BotInvited:
    """The bot was invited. Whether the room is a direct chat is read from its members once
    the bot is in, never from the invite's is_direct flag (anyone can set it)."""

    inviter: str


@dataclass(frozen=True, slots=True)
class BotMembership:
    membership: str
    """join, leave or ban: the bot's own membership changed (an invite is BotInvited)."""


@dataclass(frozen=True, slots=True)
class PowerLevelsChanged:
    pass


@dataclass(frozen=True, slots=True)
class Message:
    """A text message from a person, which may be a command."""

    age_ms: int
    """How long ago it was sent (origin_server_ts to now)."""


@dataclass(frozen=True, slots=True)
class Reaction:
    """An annotation (an emoji reaction) by a person on an event."""

    target: str
    key: str


@dataclass(frozen=True, slots=True)
class StaleMessage:
    """A message that waited longer than max_command_age (the bot was down)."""

    age_ms: int


Route = (
    Ignore | BotInvited | BotMembership | PowerLevelsChanged | Message | StaleMessage | Reaction
)


def route(event: JSON, rules: RouterRules, now_ms: int) -> Route:
    event_type = event.get("type")
    sender = event.get("sender", "")
    content = event.get("content")
    if not isinstance(content, Mapping):
        return Ignore("content is not an object")

    if event_type == "m.room.member":
        return _membership(event, content, rules)
    if event_type == "m.room.power_levels" and event.get("state_key") == "":
        return PowerLevelsChanged()

    if sender == rules.bot_user_id or rules.namespace.match(sender):
        return Ignore("sent by this appservice")
    if any(pattern.match(sender) for pattern in rules.ignore_users):
        return Ignore("sender is ignored by bot.ignore_users")
    if event_type == "m.reaction":
        return _reaction(content)
    if event_type != "m.room.message":
        return Ignore(f"{event_type} is not handled")
    if content.get("msgtype") != "m.text":
        # m.notice is what bots send; emotes, media and the rest are not requests.
        return Ignore(f"msgtype {content.get('msgtype')} is not handled")
    relates = content.get("m.relates_to")
    if isinstance(relates, Mapping) and relates.get("rel_type") == "m.replace":
        return Ignore("an edit does not run a command again")
    if not isinstance(content.get("body"), str):
        return Ignore("body is not a string")

    sent = event.get("origin_server_ts")
    age_ms = max(0, now_ms - sent) if isinstance(sent, int) else 0
    if age_ms > rules.max_command_age_ms:
        return StaleMessage(age_ms)
    return Message(age_ms)


def _reaction(content: JSON) -> Route:
    relates = content.get("m.relates_to")
    if (
        isinstance(relates, Mapping)
        and relates.get("rel_type") == "m.annotation"
        and isinstance(relates.get("event_id"), str)
        and isinstance(relates.get("key"), str)
    ):
        return Reaction(target=relates["event_id"], key=relates["key"])
    return Ignore("a reaction without its annotation (redacted)")


def _membership(event: JSON, content: JSON, rules: RouterRules) -> Route:
    if event.get("state_key") != rules.bot_user_id:
        return Ignore("another user's membership")
    membership = content.get("membership")
    if membership == "invite":
        inviter = str(event.get("sender", ""))
        if any(pattern.match(inviter) for pattern in rules.ignore_users):
            return Ignore("inviter is ignored by bot.ignore_users")
        return BotInvited(inviter=inviter)
    if membership in ("join", "leave", "ban"):
        return BotMembership(str(membership))
    return Ignore(f"bot membership {membership}")
