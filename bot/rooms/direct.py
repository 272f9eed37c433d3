"""The bot's direct chat with a person: found, or made; and telling someone something there."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.rooms.context import RoomsContext

if TYPE_CHECKING:
    from bot.core.replies import Replier


async def tell(ctx: RoomsContext, user_id: str, text: str, reply: Replier) -> None:
    """Tell a person something in a direct chat with them (made if there is none), once for the
    event `reply` answers, however often it is handled."""
    room_id = await direct_room(ctx, user_id)
    await reply.send_notice(text, reply_to=None, room_id=room_id)


async def direct_room(ctx: RoomsContext, user_id: str) -> str:
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
