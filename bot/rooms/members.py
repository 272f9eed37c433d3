"""Who is in a room, read from its state: members (without the bot and the users of its
namespace), their display names, and whether it is a direct chat."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from appservice.errors import MatrixRequestError
from bot.rooms.context import RoomsContext

log = logging.getLogger(__name__)


def people(ctx: RoomsContext, state: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Each person's membership, from a room's state (the appservice's own users left out)."""
    return {user: membership for user, membership, _ in _member_events(ctx, state)}


def display_names(ctx: RoomsContext, state: Iterable[Mapping[str, Any]]) -> dict[str, str | None]:
    """Each person's display name in the room, from its state."""
    return {user: name for user, _, name in _member_events(ctx, state)}


DISPLAY_NAME_MAX = 100


def display_name(content: Any) -> str | None:
    """An m.room.member's displayname, if it is a usable one (untrusted: any JSON)."""
    name = content.get("displayname") if isinstance(content, Mapping) else None
    if not isinstance(name, str) or not name.strip():
        return None
    return " ".join(name.split())[:DISPLAY_NAME_MAX]


def _member_events(
    ctx: RoomsContext, state: Iterable[Mapping[str, Any]]
) -> Iterator[tuple[str, str, str | None]]:
    for event in state:
        user = event.get("state_key")
        if event.get("type") != "m.room.member" or not isinstance(user, str):
            continue
        if user == ctx.bot_user_id or ctx.namespace.match(user):
            continue
        content = event.get("content", {})
        membership = content.get("membership", "leave") if isinstance(content, Mapping) else ""
        yield user, str(membership), display_name(content)


async def is_dm(ctx: RoomsContext, room_id: str) -> bool:
    """Whether this room is a direct chat: exactly one person and the bot, not a session."""
    direct = await ctx.rooms.direct(room_id)
    if direct is None:  # the bot never read who is in it (joined before it kept members)
        await read_members(ctx, room_id)
        direct = await ctx.rooms.direct(room_id)
    return bool(direct)


async def read_members(
    ctx: RoomsContext, room_id: str, state: Iterable[Mapping[str, Any]] | None = None
) -> None:
    """Read the room's whole member list from the homeserver (or from `state`, already read)."""
    if state is None:
        state = await ctx.matrix.get_state(room_id)
    await ctx.rooms.set_members(
        room_id, people(ctx, state), complete=True, names=display_names(ctx, state)
    )


async def read_unknown_members(ctx: RoomsContext) -> None:
    """Rooms joined before members were kept: read them once (at start, in the background)."""
    for room_id in await ctx.rooms.unknown_members():
        try:
            await read_members(ctx, room_id)
        except MatrixRequestError as e:
            log.info("could not read the members of %s: %s", room_id, e)


READ_DISPLAY_NAMES = "rooms: read people's display names"


async def read_display_names(ctx: RoomsContext) -> None:
    """Once, after the upgrade that keeps display names (schema 12): read the members of every
    room the bot is in again, for their names (in the background; a room that fails is left to
    its next member event)."""
    if await ctx.db.fetchval("SELECT 1 FROM maintenance_done WHERE name = $1", READ_DISPLAY_NAMES):
        return
    rooms = await ctx.db.fetch("SELECT room_id FROM rooms WHERE membership = 'join'")
    for row in rooms:
        try:
            await read_members(ctx, row["room_id"])
        except MatrixRequestError as e:
            log.info("could not read the members of %s: %s", row["room_id"], e)
    await ctx.db.execute(
        "INSERT INTO maintenance_done (name) VALUES ($1) ON CONFLICT DO NOTHING",
        READ_DISPLAY_NAMES,
    )
    log.info("read the display names of the people in %d rooms", len(rooms))
