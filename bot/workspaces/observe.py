"""Following a workspace's space: members coming and going, power levels (roles), rooms added
to it by hand (adopted as sessions)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bot.sessions.rooms import adopt_child, space_child_content
from bot.workspaces.spaces import SPACE_CHILD, refresh_roles, space_state
from bot.workspaces.store import Workspace

if TYPE_CHECKING:
    from bot.context import Context

log = logging.getLogger(__name__)


async def on_space_event(ctx: Context, workspace: Workspace, event: Mapping[str, Any]) -> None:
    event_type = event.get("type")
    state_key = event.get("state_key")
    if event_type == "m.room.member" and isinstance(state_key, str):
        membership = event.get("content", {}).get("membership")
        if not ctx.namespace.match(state_key) and membership in ("invite", "join", "leave", "ban"):
            await ctx.workspaces.set_membership(workspace.id, state_key, str(membership))
    elif event_type == "m.room.power_levels" and state_key == "":
        await refresh_roles(ctx, workspace, await space_state(ctx, workspace.space_id))
    elif event_type == SPACE_CHILD:
        child = space_child_content(dict(event))
        if child is None:
            return
        room_id, in_space = child
        if in_space and await ctx.sessions.get(room_id) is None:
            await adopt_child(ctx, workspace, room_id, str(event.get("sender", "")))
        elif not in_space:
            log.info("room %s was removed from workspace %s", room_id, workspace.id)
