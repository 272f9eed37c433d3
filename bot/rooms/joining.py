"""What the bot does when invited or when its power changes: join, say hello, publish the
MSC4332 commands state event."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import TYPE_CHECKING

from appservice.errors import MatrixRequestError
from bot.commands.catalog import msc4332_content
from bot.core import power, strings
from bot.rooms.context import RoomsContext

if TYPE_CHECKING:
    from bot.core.replies import Replier

log = logging.getLogger(__name__)

MSC4332_COMMANDS = "org.matrix.msc4332.commands"


async def join_invited(ctx: RoomsContext, room_id: str, inviter: str) -> bool:
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


async def greet(ctx: RoomsContext, room_id: str, is_direct: bool, reply: Replier) -> None:
    """Say hello in a room the bot joined, and advertise the commands if allowed."""
    name = ctx.config.appservice.bot_displayname
    welcome = strings.WELCOME_DM if is_direct else strings.WELCOME_ROOM
    await reply.send_notice(welcome.format(name=name), reply_to=None)
    await publish_commands(ctx, room_id)


async def publish_commands(ctx: RoomsContext, room_id: str) -> bool:
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
