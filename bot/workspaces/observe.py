"""Following a workspace's space: members coming and going (someone leaving loses their role and,
by the bot's hand, their power and their sessions), power levels (roles), rooms listed in it by
hand (adopted as sessions only if the rules hold: bot.sessions.adoption)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bot.core import strings
from bot.core.replies import Replier
from bot.sessions import adoption
from bot.sessions.rooms import space_child_content
from bot.workspaces.departures import on_departure
from bot.workspaces.spaces import SPACE_CHILD, refresh_roles, space_state
from bot.workspaces.store import Workspace

if TYPE_CHECKING:
    from bot.context import Context

log = logging.getLogger(__name__)


async def _removed(
    ctx: Context, workspace: Workspace, room_id: str, by: str, reply: Replier
) -> None:
    """A session taken out of the workspace's space leaves the workspace: it ends (nothing said
    there from now on is remembered or answered from the workspace's memory), and its room is
    told. Its past stays in memory until forgotten; its history's redactions still apply."""
    session = await ctx.sessions.get(room_id)
    if session is None or session.workspace_id != workspace.id:
        return
    if await ctx.sessions.end(room_id, by, strings.SESSION_REMOVED_SUMMARY):
        text = strings.SESSION_REMOVED.format(name=workspace.name, by=by)
        await reply.send_notice(text, room_id=room_id, reply_to=None)


async def on_space_event(
    ctx: Context, workspace: Workspace, event: Mapping[str, Any], reply: Replier
) -> None:
    event_type = event.get("type")
    state_key = event.get("state_key")
    if event_type == "m.room.member" and isinstance(state_key, str):
        membership = event.get("content", {}).get("membership")
        if ctx.namespace.match(state_key) or membership not in ("invite", "join", "leave", "ban"):
            return
        await ctx.workspaces.set_membership(workspace.id, state_key, str(membership))
        if membership in ("leave", "ban"):
            await on_departure(ctx, workspace, state_key)
            await refresh_roles(ctx, workspace, await space_state(ctx, workspace.space_id))
    elif event_type == "m.room.power_levels" and state_key == "":
        await refresh_roles(ctx, workspace, await space_state(ctx, workspace.space_id))
    elif event_type == SPACE_CHILD:
        child = space_child_content(dict(event))
        if child is None:
            return
        room_id, in_space = child
        if in_space:
            await adoption.on_listed(ctx, workspace, room_id, str(event.get("sender", "")), reply)
        else:
            await ctx.sessions.drop_pending(room_id, workspace.id)
            log.info("room %s was removed from workspace %s", room_id, workspace.id)
            await _removed(ctx, workspace, room_id, str(event.get("sender", "")), reply)
