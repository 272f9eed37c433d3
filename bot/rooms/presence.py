"""Whether a person is here: members' presence from the cache the homeserver keeps filled, or
asked of the homeserver when it has not said anything yet (after a restart of the bot, Synapse
only sends changes)."""

from __future__ import annotations

from appservice.errors import MatrixError
from appservice.presence import Presence
from bot.rooms.context import RoomsContext


async def presence_of(ctx: RoomsContext, user_id: str) -> Presence | None:
    known = ctx.presence.get(user_id)
    if known is not None:
        return known
    try:
        content = await ctx.matrix.get_presence(user_id)
    except MatrixError:
        return None
    return await ctx.presence.update({"type": "m.presence", "sender": user_id, "content": content})


async def is_here(ctx: RoomsContext, user_id: str) -> bool:
    """Online now. Unknown counts as not here: better one DM too many than a missed action."""
    presence = await presence_of(ctx, user_id)
    return presence is not None and presence.is_online
