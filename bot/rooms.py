"""Rooms the bot is in: what it knows of them (RoomStore) and what it does when invited or
when its power changes (join, say hello, publish the MSC4332 commands state event).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

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
    direct_user: str | None
    invited_by: str | None
    commands_hash: str | None


class RoomStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, room_id: str) -> Room | None:
        row = await self._pool.fetchrow(
            """
            SELECT room_id, membership, is_direct, direct_user, invited_by, commands_hash
            FROM rooms WHERE room_id = $1
            """,
            room_id,
        )
        return Room(**dict(row)) if row else None

    async def record_invite(self, room_id: str, inviter: str, is_direct: bool) -> None:
        await self._pool.execute(
            """
            INSERT INTO rooms (room_id, membership, is_direct, direct_user, invited_by)
            VALUES ($1, 'invite', $2, CASE WHEN $2 THEN $3 END, $3)
            ON CONFLICT (room_id) DO UPDATE SET
                membership = 'invite', is_direct = excluded.is_direct,
                direct_user = excluded.direct_user, invited_by = excluded.invited_by,
                updated_at = now()
            """,
            room_id,
            is_direct,
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

    async def set_commands_hash(self, room_id: str, commands_hash: str) -> None:
        await self._pool.execute(
            "UPDATE rooms SET commands_hash = $2, updated_at = now() WHERE room_id = $1",
            room_id,
            commands_hash,
        )

    async def direct_with(self, user_id: str) -> str | None:
        """The latest direct chat the bot is in with this person."""
        room_id = await self._pool.fetchval(
            """
            SELECT room_id FROM rooms
            WHERE is_direct AND direct_user = $1 AND membership = 'join'
            ORDER BY updated_at DESC LIMIT 1
            """,
            user_id,
        )
        return str(room_id) if room_id is not None else None

    async def joined(self) -> list[str]:
        rows = await self._pool.fetch("SELECT room_id FROM rooms WHERE membership = 'join'")
        return [row["room_id"] for row in rows]


async def join_invited(ctx: Context, room_id: str, inviter: str, is_direct: bool) -> bool:
    """Join a room the bot was invited to. False if the invite is gone (nothing to retry)."""
    await ctx.rooms.record_invite(room_id, inviter, is_direct)
    try:
        await ctx.matrix.join(room_id)
    except MatrixRequestError as e:
        log.warning("could not join %s after an invite from %s: %s", room_id, inviter, e)
        await ctx.rooms.set_membership(room_id, "leave")
        return False
    await ctx.rooms.set_membership(room_id, "join")
    log.info("joined %s (invited by %s%s)", room_id, inviter, ", direct chat" if is_direct else "")
    return True


async def greet(ctx: Context, room_id: str, is_direct: bool, reply: Replier) -> None:
    """Say hello in a room the bot joined, and advertise the commands if allowed."""
    name = ctx.config.appservice.bot_displayname
    welcome = strings.WELCOME_DM if is_direct else strings.WELCOME_ROOM
    await reply.send_notice(welcome.format(name=name), reply_to=None)
    await publish_commands(ctx, room_id)


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
