"""Workspaces on the Matrix side: create a space, adopt one, follow its members and roles.

Who creates the space decides who ranks highest (room version 12: creators outrank every power
level). With `!ws create` the bot creates the space, so it can always manage the workspace (add
session rooms, invite); the host gets power 100, the highest level that can be granted. A space
a host created and invited the bot into is adopted: there the host outranks the bot, and the bot
asks for power 100 if it lacks what it needs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from appservice.errors import MatrixRequestError
from bot.core import power, strings
from bot.core.errors import UserError
from bot.core.replies import Replier
from bot.rooms.direct import tell
from bot.workspaces.context import WorkspacesContext
from bot.workspaces.roles import DELEGATE_LEVEL, HOST_LEVEL, choose_host, listed_users, roles
from bot.workspaces.store import Workspace

log = logging.getLogger(__name__)

SPACE_CHILD = "m.space.child"


def is_space(create_content: Mapping[str, Any] | None) -> bool:
    return bool(create_content) and create_content.get("type") == "m.space"  # type: ignore[union-attr]


async def create_workspace(
    ctx: WorkspacesContext, name: str, host: str, origin_event: str
) -> Workspace:
    """A new space with `host` as host (power 100) and the bot as its creator.

    `origin_event` is the command's event: handled again after a crash, it finds the workspace
    instead of making a second one.
    """
    if (made := await ctx.workspaces.by_origin(origin_event)) is not None:
        return made
    space_id = await ctx.matrix.create_room(
        {
            "name": name,
            "topic": strings.SPACE_TOPIC,
            "creation_content": {"type": "m.space"},
            "preset": "private_chat",
            "visibility": "private",
            "invite": [host],
            "power_level_content_override": {
                "users": {host: HOST_LEVEL},
                "users_default": 0,
                # A space has no conversation of its own; only hosts post there.
                "events_default": HOST_LEVEL,
                "invite": DELEGATE_LEVEL,
            },
            "initial_state": [
                {"type": "m.room.history_visibility", "content": {"history_visibility": "shared"}},
                # private_chat lets guests in by default; a workspace is for its members.
                {"type": "m.room.guest_access", "content": {"guest_access": "forbidden"}},
            ],
        }
    )
    workspace = await ctx.workspaces.create(
        space_id, name, host, created_by_bot=True, origin_event=origin_event
    )
    await ctx.workspaces.set_membership(workspace.id, host, "invite")
    await ctx.workspaces.set_roles(workspace.id, {host: "host"})
    log.info("created workspace %s (%s) for %s", workspace.id, space_id, host)
    return workspace


async def space_state(
    ctx: WorkspacesContext, space_id: str
) -> dict[tuple[str, str], dict[str, Any]]:
    state = await ctx.matrix.get_state(space_id)
    return {(str(e.get("type")), str(e.get("state_key"))): e for e in state}


def may_create(ctx: WorkspacesContext, user_id: str) -> bool:
    """`bot.workspace_creators`: who may make a workspace, by `!ws create` or by having a space
    adopted (empty: anyone)."""
    allowed = ctx.config.bot.workspace_creators
    return not allowed or any(re.fullmatch(p, user_id) for p in allowed)


async def adopt_space(
    ctx: WorkspacesContext, space_id: str, inviter: str, reply: Replier
) -> Workspace | None:
    """Make a space the bot joined into a workspace, if the inviter may make workspaces and
    has power 100 there.

    Returns None otherwise, having left the space and told the inviter why.
    """
    state = await space_state(ctx, space_id)
    create = state.get(("m.room.create", ""))
    levels = state.get(("m.room.power_levels", ""))
    name = str(state.get(("m.room.name", ""), {}).get("content", {}).get("name") or space_id)
    why = None
    if not may_create(ctx, inviter):
        why = strings.CREATE_NOT_ALLOWED
    elif power.user_level(levels, create, inviter) < HOST_LEVEL:
        why = strings.SPACE_NEEDS_HOST
    if why is not None:
        log.info("%s invited the bot to space %s, not adopted: %s", inviter, space_id, why)
        await ctx.matrix.leave(space_id)
        await ctx.rooms.set_membership(space_id, "leave")
        await tell(ctx, inviter, strings.SPACE_NOT_ADOPTED.format(name=name, reason=why), reply)
        return None
    workspace = await ctx.workspaces.create(space_id, name, inviter, created_by_bot=False)
    await sync_members(ctx, workspace, state)
    log.info("adopted space %s as workspace %s, host %s", space_id, workspace.id, inviter)
    return workspace


async def sync_members(
    ctx: WorkspacesContext,
    workspace: Workspace,
    state: Mapping[tuple[str, str], Mapping[str, Any]],
) -> None:
    """Mirror the space's memberships and roles from its full state."""
    for (event_type, state_key), event in state.items():
        if event_type == "m.room.member" and not ctx.namespace.match(state_key):
            membership = str(event.get("content", {}).get("membership", "leave"))
            if membership in ("invite", "join", "leave", "ban"):
                await ctx.workspaces.set_membership(workspace.id, state_key, membership)
    await refresh_roles(ctx, workspace, state)


async def refresh_roles(
    ctx: WorkspacesContext,
    workspace: Workspace,
    state: Mapping[tuple[str, str], Mapping[str, Any]],
) -> None:
    """Roles follow the space's power levels; the host the bot speaks to follows the roles."""
    create = state.get(("m.room.create", ""))
    levels = state.get(("m.room.power_levels", ""))
    # Only people in the space have a role, whatever power levels still name them.
    present = {
        key
        for (event_type, key), event in state.items()
        if event_type == "m.room.member"
        and event.get("content", {}).get("membership") in ("join", "invite")
    }
    candidates = (listed_users(levels, create) | {workspace.host}) & present
    by_user = roles(levels, create, candidates, ctx.namespace)
    await ctx.workspaces.set_roles(
        workspace.id, {u: r for u, r in by_user.items() if r != "member"}
    )
    host = choose_host(workspace.host, by_user)
    if host != workspace.host:
        log.info("workspace %s: host is now %s (was %s)", workspace.id, host, workspace.host)
        await ctx.workspaces.set_host(workspace.id, host)


async def set_role_level(
    ctx: WorkspacesContext, workspace: Workspace, user_id: str, level: int
) -> None:
    """Give a user a power level in the space and every active session (delegation)."""
    rooms = [workspace.space_id] + [
        s.room_id for s in await ctx.sessions.of_workspace(workspace.id, active_only=True)
    ]
    for room_id in rooms:
        levels = await ctx.matrix.get_state_event(room_id, "m.room.power_levels") or {}
        users = dict(levels.get("users", {}))
        if level:
            users[user_id] = level
        else:
            users.pop(user_id, None)
        try:
            await ctx.matrix.send_state(room_id, "m.room.power_levels", {**levels, "users": users})
        except MatrixRequestError as e:
            log.warning("could not set %s to %d in %s: %s", user_id, level, room_id, e)
            if room_id == workspace.space_id:
                raise


async def space_membership(ctx: WorkspacesContext, workspace: Workspace, user_id: str) -> str:
    """The user's membership in the space as the homeserver has it now ("none" if never)."""
    member = await ctx.matrix.get_state_event(workspace.space_id, "m.room.member", user_id)
    return str((member or {}).get("membership", "none"))


async def invite_everywhere(
    ctx: WorkspacesContext, workspace: Workspace, user_id: str
) -> list[str]:
    """Invite a user to the space, then to its active sessions — never to a session without the
    space: a refusal there (a ban, no power) is raised, and no session invites them. Returns the
    rooms invited to."""
    membership = await space_membership(ctx, workspace, user_id)
    if membership == "ban":
        raise UserError(strings.USER_BANNED.format(user=user_id, name=workspace.name))
    invited = []
    if membership not in ("join", "invite"):
        await ctx.matrix.invite(workspace.space_id, user_id)
        await ctx.workspaces.set_membership(workspace.id, user_id, "invite")
        invited.append(workspace.space_id)
    for session in await ctx.sessions.of_workspace(workspace.id, active_only=True):
        try:
            await ctx.matrix.invite(session.room_id, user_id)
            invited.append(session.room_id)
        except MatrixRequestError as e:
            # Already in that room, or banned from it by its own admins: nothing to do there.
            log.info("not inviting %s to %s: %s", user_id, session.room_id, e)
    return invited
