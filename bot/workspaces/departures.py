"""Someone left the workspace's space, was kicked or banned: from that moment they have no role
(bot.workspaces.access reads membership with every check). Here, what the bot does about it in
the rooms it manages: their power taken back in the space and every session, and — unless the
workspace's `remove_from_sessions` setting is off — they are removed from its sessions, so that
what they can no longer confirm they can no longer read either.

Each step is best effort, room by room (the bot may lack the power in a space or room a person
made): the role check does not depend on it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from appservice.errors import MatrixRequestError
from bot.core import strings
from bot.workspaces.store import Workspace

if TYPE_CHECKING:
    from bot.context import Context

log = logging.getLogger(__name__)


async def take_power(ctx: Context, room_id: str, user_id: str) -> bool:
    """Remove the user from the room's power levels. True if they held power there (and the
    bot took it back); False if they held none."""
    levels = await ctx.matrix.get_state_event(room_id, "m.room.power_levels") or {}
    users = dict(levels.get("users", {}))
    if user_id not in users:
        return False
    users.pop(user_id)
    await ctx.matrix.send_state(room_id, "m.room.power_levels", {**levels, "users": users})
    return True


async def take_power_everywhere(ctx: Context, workspace: Workspace, user_id: str) -> list[str]:
    """Remove the user's power in the space and in every session. Returns the rooms where the bot
    took it back; a room where it could not is logged (and re-raised for the space, where it
    decides who may do what)."""
    rooms = [workspace.space_id] + [
        s.room_id for s in await ctx.sessions.of_workspace(workspace.id)
    ]
    taken = []
    for room_id in rooms:
        try:
            if await take_power(ctx, room_id, user_id):
                taken.append(room_id)
        except MatrixRequestError as e:
            log.warning("could not take the power of %s in %s: %s", user_id, room_id, e)
            if room_id == workspace.space_id:
                raise
    return taken


async def on_departure(ctx: Context, workspace: Workspace, user_id: str) -> None:
    """`user_id` left the space (or was kicked or banned from it)."""
    try:
        taken = await take_power_everywhere(ctx, workspace, user_id)
    except MatrixRequestError:
        taken = []  # the space is the host's and the bot is below them: logged above
    if taken:
        log.info("took the power of %s (left %s) in %d room(s)", user_id, workspace.id, len(taken))
    if not workspace.settings.remove_from_sessions:
        return
    for session in await ctx.sessions.of_workspace(workspace.id, active_only=True):
        member = await ctx.matrix.get_state_event(session.room_id, "m.room.member", user_id)
        if (member or {}).get("membership") not in ("join", "invite"):
            continue
        try:
            await ctx.matrix.kick(session.room_id, user_id, strings.REMOVED_FROM_SESSION)
            log.info(
                "removed %s from session %s (left %s)", user_id, session.room_id, workspace.id
            )
        except MatrixRequestError as e:
            log.warning("could not remove %s from %s: %s", user_id, session.room_id, e)
