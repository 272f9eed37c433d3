"""Which workspace a command applies to, and who may do what in it.

Roles are checked against the space's power levels as the homeserver has them now (one state
read), never against a cache: a host who handed over or a delegate who was removed a second ago
has already lost the right.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot import strings
from bot.errors import PermissionDenied, UserError
from bot.workspaces.roles import Role, role_of
from bot.workspaces.store import Workspace

if TYPE_CHECKING:
    from bot.context import Context


async def workspace_of_room(ctx: Context, room_id: str, sender: str) -> Workspace | None:
    """The workspace of a session or space room; in a DM, the sender's. None elsewhere."""
    session = await ctx.sessions.get(room_id)
    if session is not None:
        return await ctx.workspaces.get(session.workspace_id)
    space = await ctx.workspaces.by_space(room_id)
    if space is not None:
        return space
    room = await ctx.rooms.get(room_id)
    if room is not None and room.is_direct:
        return await workspace_of_sender(ctx, sender)
    return None


async def workspace_of_sender(ctx: Context, sender: str) -> Workspace:
    """In a DM: the workspace picked with `!ws use`, or the only one the sender is in."""
    mine = await ctx.workspaces.of_member(sender)
    chosen = await ctx.workspaces.direct_choice(sender)
    for workspace in mine:
        if workspace.id == chosen:
            return workspace
    if len(mine) == 1:
        return mine[0]
    if not mine:
        raise UserError(strings.NO_WORKSPACE)
    names = ", ".join(f"**{w.name}**" for w in mine)
    raise UserError(strings.WHICH_WORKSPACE.format(names=names))


async def require_workspace(ctx: Context, room_id: str, sender: str) -> Workspace:
    workspace = await workspace_of_room(ctx, room_id, sender)
    if workspace is None:
        raise UserError(strings.NOT_IN_WORKSPACE)
    return workspace


async def current_role(ctx: Context, workspace: Workspace, user_id: str) -> Role:
    """The user's role now, from the space's power levels on the homeserver (the create event,
    which never changes, is read once)."""
    create = ctx.create_events.get(workspace.space_id)
    if create is None:
        state = await ctx.matrix.get_state(workspace.space_id)
        by_type = {(e.get("type"), e.get("state_key")): e for e in state}
        create = by_type.get(("m.room.create", ""), {})
        ctx.create_events[workspace.space_id] = create
        levels = by_type.get(("m.room.power_levels", ""))
    else:
        levels = await ctx.matrix.get_state_event(workspace.space_id, "m.room.power_levels")
    return role_of(levels, create, user_id)


async def require_host(ctx: Context, workspace: Workspace, user_id: str) -> None:
    if await current_role(ctx, workspace, user_id) != "host":
        raise PermissionDenied(strings.HOST_ONLY.format(host=workspace.host))


async def require_proposer(ctx: Context, workspace: Workspace, user_id: str) -> None:
    """May propose actions (@act, or through a Letta agent's tool call): the `act` setting."""
    if workspace.settings.act == "host":
        await require_host(ctx, workspace, user_id)
    else:
        await require_member(ctx, workspace, user_id)


async def require_member(ctx: Context, workspace: Workspace, user_id: str) -> None:
    member = await ctx.workspaces.member(workspace.id, user_id)
    if member is None or member.membership not in ("join", "invite"):
        raise PermissionDenied(strings.MEMBERS_ONLY.format(name=workspace.name))
