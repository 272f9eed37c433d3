"""Rooms the bot is in: what it knows of them (RoomStore) and what it does when invited or
when its power changes (join, say hello, publish the MSC4332 commands state event).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg

from appservice.errors import MatrixRequestError
from bot import power, strings
from bot.commands.catalog import msc4332_content

if TYPE_CHECKING:
    from bot.context import Context
    from bot.replies import Replier

log = logging.getLogger(__name__)

MSC4332_COMMANDS = "org.matrix.msc4332.commands"


@dataclass(frozen=True, slots=True)
class Room:
    room_id: str
    membership: str
    is_direct: bool
    """Exactly one person is in the room with the bot (by its members, never by the invite's
    is_direct flag). A session or a space is never treated as a DM, whatever its members."""
    direct_user: str | None
    invited_by: str | None
    commands_hash: str | None
    members_known: bool


_ROOM_COLUMNS = (
    "room_id, membership, is_direct, direct_user, invited_by, commands_hash, members_known"
)

# A room is direct when exactly one person is in it (joined or invited) besides the bot's own
# users, and it is neither a session nor a workspace's space.
_REFRESH_DIRECT = """
UPDATE rooms SET direct_user = d.user_id, is_direct = d.user_id IS NOT NULL, updated_at = now()
FROM (
    SELECT CASE WHEN count(*) = 1 THEN min(user_id) END AS user_id
    FROM room_members WHERE room_id = $1 AND membership IN ('join', 'invite')
) AS d
WHERE rooms.room_id = $1
  AND (rooms.direct_user IS DISTINCT FROM d.user_id
       OR rooms.is_direct IS DISTINCT FROM (d.user_id IS NOT NULL))
"""


class RoomStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, room_id: str) -> Room | None:
        row = await self._pool.fetchrow(
            f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE room_id = $1", room_id
        )
        return Room(**dict(row)) if row else None

    async def record_invite(self, room_id: str, inviter: str) -> None:
        await self._pool.execute(
            """
            INSERT INTO rooms (room_id, membership, invited_by) VALUES ($1, 'invite', $2)
            ON CONFLICT (room_id) DO UPDATE SET
                membership = 'invite', invited_by = excluded.invited_by, updated_at = now()
            """,
            room_id,
            inviter,
        )

    async def set_membership(self, room_id: str, membership: str) -> None:
        await self._pool.execute(
            """
            INSERT INTO rooms (room_id, membership) VALUES ($1, $2)
            ON CONFLICT (room_id) DO UPDATE
            SET membership = excluded.membership, updated_at = now()
            """,
            room_id,
            membership,
        )

    async def set_members(
        self,
        room_id: str,
        memberships: dict[str, str],
        *,
        complete: bool = False,
        names: Mapping[str, str | None] | None = None,
    ) -> None:
        """Record people's membership in a room (`complete`: this is everyone, read from the
        room's state), their display names there (`names`), and whether that makes it a DM."""
        names = names or {}
        async with self._pool.acquire() as conn, conn.transaction():
            if complete:
                await conn.execute("DELETE FROM room_members WHERE room_id = $1", room_id)
                await conn.execute(
                    "UPDATE rooms SET members_known = true WHERE room_id = $1", room_id
                )
            await conn.executemany(
                """
                INSERT INTO room_members (room_id, user_id, membership, displayname)
                VALUES ($1, $2, $3, $4)
                ON CONFLICT (room_id, user_id) DO UPDATE
                SET membership = excluded.membership, displayname = excluded.displayname
                """,
                [
                    (room_id, user, membership, names.get(user))
                    for user, membership in memberships.items()
                ],
            )
            await conn.execute(_REFRESH_DIRECT, room_id)

    async def direct(self, room_id: str) -> bool | None:
        """Whether the bot is in this room with exactly one person, and it is neither a session
        nor a space (one query: this is asked for every message). None if the bot is in it but
        never read its members."""
        row = await self._pool.fetchrow(
            """
            SELECT r.members_known,
                   r.is_direct
                   AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.room_id = r.room_id)
                   AND NOT EXISTS (SELECT 1 FROM workspaces w WHERE w.space_id = r.room_id)
                   AS direct
            FROM rooms r WHERE r.room_id = $1 AND r.membership = 'join'
            """,
            room_id,
        )
        if row is None:
            return False
        return bool(row["direct"]) if row["members_known"] else None

    async def unknown_members(self) -> list[str]:
        """Rooms the bot is in whose member list it never read (joined before it kept them)."""
        rows = await self._pool.fetch(
            "SELECT room_id FROM rooms WHERE membership = 'join' AND NOT members_known"
        )
        return [row["room_id"] for row in rows]

    async def set_commands_hash(self, room_id: str, commands_hash: str) -> None:
        await self._pool.execute(
            "UPDATE rooms SET commands_hash = $2, updated_at = now() WHERE room_id = $1",
            room_id,
            commands_hash,
        )

    async def direct_with(self, user_id: str) -> str | None:
        """The latest direct chat the bot is in with this person (and no one else)."""
        room_id = await self._pool.fetchval(
            """
            SELECT room_id FROM rooms r
            WHERE is_direct AND direct_user = $1 AND membership = 'join'
              AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.room_id = r.room_id)
              AND NOT EXISTS (SELECT 1 FROM workspaces w WHERE w.space_id = r.room_id)
            ORDER BY updated_at DESC LIMIT 1
            """,
            user_id,
        )
        return str(room_id) if room_id is not None else None

    async def joined(self) -> list[str]:
        rows = await self._pool.fetch("SELECT room_id FROM rooms WHERE membership = 'join'")
        return [row["room_id"] for row in rows]


def people(ctx: Context, state: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Each person's membership, from a room's state (the appservice's own users left out)."""
    return {user: membership for user, membership, _ in _member_events(ctx, state)}


def display_names(ctx: Context, state: Iterable[Mapping[str, Any]]) -> dict[str, str | None]:
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
    ctx: Context, state: Iterable[Mapping[str, Any]]
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


async def is_dm(ctx: Context, room_id: str) -> bool:
    """Whether this room is a direct chat: exactly one person and the bot, not a session."""
    direct = await ctx.rooms.direct(room_id)
    if direct is None:  # the bot never read who is in it (joined before it kept members)
        await read_members(ctx, room_id)
        direct = await ctx.rooms.direct(room_id)
    return bool(direct)


async def read_members(
    ctx: Context, room_id: str, state: Iterable[Mapping[str, Any]] | None = None
) -> None:
    """Read the room's whole member list from the homeserver (or from `state`, already read)."""
    if state is None:
        state = await ctx.matrix.get_state(room_id)
    await ctx.rooms.set_members(
        room_id, people(ctx, state), complete=True, names=display_names(ctx, state)
    )


async def read_unknown_members(ctx: Context) -> None:
    """Rooms joined before members were kept: read them once (at start, in the background)."""
    for room_id in await ctx.rooms.unknown_members():
        try:
            await read_members(ctx, room_id)
        except MatrixRequestError as e:
            log.info("could not read the members of %s: %s", room_id, e)


READ_DISPLAY_NAMES = "rooms: read people's display names"


async def read_display_names(ctx: Context) -> None:
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


async def join_invited(ctx: Context, room_id: str, inviter: str) -> bool:
    """Join a room the bot was invited to. False if the invite is gone (nothing to retry)."""
    await ctx.rooms.record_invite(room_id, inviter)
    try:
        await ctx.matrix.join(room_id)
    except MatrixRequestError as e:
        log.warning("could not join %s after an invite from %s: %s", room_id, inviter, e)
        await ctx.rooms.set_membership(room_id, "leave")
        return False
    await ctx.rooms.set_membership(room_id, "join")
    log.info("joined %s (invited by %s)", room_id, inviter)
    return True


async def greet(ctx: Context, room_id: str, is_direct: bool, reply: Replier) -> None:
    """Say hello in a room the bot joined, and advertise the commands if allowed."""
    name = ctx.config.appservice.bot_displayname
    welcome = strings.WELCOME_DM if is_direct else strings.WELCOME_ROOM
    await reply.send_notice(welcome.format(name=name), reply_to=None)
    await publish_commands(ctx, room_id)


async def tell(ctx: Context, user_id: str, text: str, reply: Replier) -> None:
    """Tell a person something in a direct chat with them (made if there is none), once for the
    event `reply` answers, however often it is handled."""
    room_id = await direct_room(ctx, user_id)
    await reply.send_notice(text, reply_to=None, room_id=room_id)


async def direct_room(ctx: Context, user_id: str) -> str:
    """The bot's direct chat with a person: the one on record, or a new one."""
    existing = await ctx.rooms.direct_with(user_id)
    if existing is not None:
        return existing
    room_id = await ctx.matrix.create_room(
        {"is_direct": True, "invite": [user_id], "preset": "trusted_private_chat"}
    )
    await ctx.rooms.record_invite(room_id, ctx.bot_user_id)
    await ctx.rooms.set_membership(room_id, "join")
    await ctx.rooms.set_members(room_id, {user_id: "invite"}, complete=True)
    return room_id


async def publish_commands(ctx: Context, room_id: str) -> bool:
    """Put the MSC4332 commands state event in the room if the bot has the power to.

    Returns whether it is in place. Without the power, it is tried again when power levels change.
    """
    content = msc4332_content()
    content_hash = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]
    room = await ctx.rooms.get(room_id)
    if room is not None and room.commands_hash == content_hash:
        return True
    state = await ctx.matrix.get_state(room_id)
    by_type = {(e.get("type"), e.get("state_key")): e for e in state}
    create = by_type.get(("m.room.create", ""))
    levels = by_type.get(("m.room.power_levels", ""))
    if (create or {}).get("content", {}).get("type") == "m.space":
        return False  # a space has no composer to offer commands in
    if not power.can_send_state(levels, create, ctx.bot_user_id, MSC4332_COMMANDS):
        log.info("no power to publish the commands state event in %s (yet)", room_id)
        return False
    try:
        await ctx.matrix.send_state(room_id, MSC4332_COMMANDS, content, ctx.bot_user_id)
    except MatrixRequestError as e:
        log.warning("could not publish the commands state event in %s: %s", room_id, e)
        return False
    await ctx.rooms.set_commands_hash(room_id, content_hash)
    log.info("published the commands state event in %s", room_id)
    return True
