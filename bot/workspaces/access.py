"""Which workspace a command applies to, and who may do what in it.

Roles are checked against the space as the homeserver has it now — the person's membership and
the power levels — never against a cache: a host who handed over, a delegate whose power was
taken back, or anyone who left, was kicked or banned a second ago has already lost the right.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from appservice.errors import MatrixRequestError
from bot.core import strings
from bot.core.errors import PermissionDenied, UserError
from bot.core.power import redact_level, user_level
from bot.rooms.members import is_dm
from bot.workspaces.context import WorkspacesContext
from bot.workspaces.roles import Role, role_of
from bot.workspaces.store import Workspace

log = logging.getLogger(__name__)


async def workspace_of_room(ctx: WorkspacesContext, room_id: str, sender: str) -> Workspace | None:
    """The workspace of a session or space room; in a DM, the sender's. None elsewhere."""
    session = await ctx.sessions.get(room_id)
    if session is not None:
        return await ctx.workspaces.get(session.workspace_id)
    space = await ctx.workspaces.by_space(room_id)
    if space is not None:
        return space
    if await is_dm(ctx, room_id):
        return await workspace_of_sender(ctx, sender)
    return None


async def workspace_of_sender(ctx: WorkspacesContext, sender: str) -> Workspace:
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


async def require_workspace(ctx: WorkspacesContext, room_id: str, sender: str) -> Workspace:
    workspace = await workspace_of_room(ctx, room_id, sender)
    if workspace is None:
        raise UserError(strings.NOT_IN_WORKSPACE)
    return workspace


async def current_role(ctx: WorkspacesContext, workspace: Workspace, user_id: str) -> Role | None:
    """The user's role now: None unless they are in the space (joined, or invited and not yet
    joined); otherwise from the space's power levels. Both read from the homeserver (the create
    event, which never changes, is read once)."""
    space = workspace.space_id
    try:
        member, levels, create = await asyncio.gather(
            ctx.matrix.get_state_event(space, "m.room.member", user_id),
            ctx.matrix.get_state_event(space, "m.room.power_levels"),
            create_event(ctx, space),
        )
    except MatrixRequestError as e:
        if e.errcode == "M_FORBIDDEN":  # the bot is no longer in the space: nobody has a role
            log.warning("cannot read the space of %s: %s", workspace.id, e)
            raise UserError(strings.NOT_IN_SPACE.format(name=workspace.name)) from None
        raise
    if (member or {}).get("membership") not in ("join", "invite"):
        return None
    return role_of(levels, create, user_id)


async def create_event(ctx: WorkspacesContext, room_id: str) -> dict[str, Any]:
    create = ctx.create_events.get(room_id)
    if create is None:
        state = await ctx.matrix.get_state(room_id)
        by_type = {(e.get("type"), e.get("state_key")): e for e in state}
        create = dict(by_type.get(("m.room.create", ""), {}))
        ctx.create_events[room_id] = create
    return create


async def may_redact_others(ctx: WorkspacesContext, room_id: str, user_id: str) -> bool:
    """Whether the user may redact other people's events in the room, by its power levels now."""
    levels, create = await asyncio.gather(
        ctx.matrix.get_state_event(room_id, "m.room.power_levels"), create_event(ctx, room_id)
    )
    return user_level(levels, create, user_id) >= redact_level(levels)


async def require_host(ctx: WorkspacesContext, workspace: Workspace, user_id: str) -> None:
    if await current_role(ctx, workspace, user_id) != "host":
        raise PermissionDenied(strings.HOST_ONLY.format(host=workspace.host))


async def require_proposer(ctx: WorkspacesContext, workspace: Workspace, user_id: str) -> None:
    """May propose actions (@act, or through a Letta agent's tool call): the `act` setting."""
    if workspace.settings.act == "host":
        await require_host(ctx, workspace, user_id)
    else:
        await require_member(ctx, workspace, user_id)


async def require_member(ctx: WorkspacesContext, workspace: Workspace, user_id: str) -> None:
    if await current_role(ctx, workspace, user_id) is None:
        raise PermissionDenied(strings.MEMBERS_ONLY.format(name=workspace.name))
