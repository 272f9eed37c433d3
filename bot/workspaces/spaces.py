"""Workspaces on the Matrix side: create a space, adopt one, follow its members and roles.

Who creates the space decides who ranks highest (room version 12: creators outrank every power
level). With `!ws create` the bot creates the space, so it can always manage the workspace (add
session rooms, invite); the host gets power 100, the highest level that can be granted. A space
a host created and invited the bot into is adopted: there the host outranks the bot, and the bot
asks for power 100 if it lacks what it needs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from appservice.errors import MatrixRequestError
from bot import power, strings
from bot.workspaces.roles import DELEGATE_LEVEL, HOST_LEVEL, choose_host, listed_users, roles
from bot.workspaces.store import Workspace

if TYPE_CHECKING:
    from bot.context import Context

log = logging.getLogger(__name__)

SPACE_CHILD = "m.space.child"


def is_space(create_content: Mapping[str, Any] | None) -> bool:
    return bool(create_content) and create_content.get("type") == "m.space"  # type: ignore[union-attr]


async def create_workspace(ctx: Context, name: str, host: str, origin_event: str) -> Workspace:
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


async def space_state(ctx: Context, space_id: str) -> dict[tuple[str, str], dict[str, Any]]:
    state = await ctx.matrix.get_state(space_id)
    return {(str(e.get("type")), str(e.get("state_key"))): e for e in state}


async def adopt_space(ctx: Context, space_id: str, inviter: str) -> Workspace | None:
    """Make a space the bot joined into a workspace, if the inviter may (power 100).

    Returns None (and leaves the space) otherwise.
    """
    state = await space_state(ctx, space_id)
    create = state.get(("m.room.create", ""))
    levels = state.get(("m.room.power_levels", ""))
    if power.user_level(levels, create, inviter) < HOST_LEVEL:
        log.info("%s invited the bot to space %s without power 100; leaving", inviter, space_id)
        await ctx.matrix.leave(space_id)
        await ctx.rooms.set_membership(space_id, "leave")
        return None
    name = str(state.get(("m.room.name", ""), {}).get("content", {}).get("name") or space_id)
    workspace = await ctx.workspaces.create(space_id, name, inviter, created_by_bot=False)
    await sync_members(ctx, workspace, state)
    log.info("adopted space %s as workspace %s, host %s", space_id, workspace.id, inviter)
    return workspace


async def sync_members(
    ctx: Context, workspace: Workspace, state: Mapping[tuple[str, str], Mapping[str, Any]]
) -> None:
    """Mirror the space's memberships and roles from its full state."""
    for (event_type, state_key), event in state.items():
        if event_type == "m.room.member" and not ctx.namespace.match(state_key):
            membership = str(event.get("content", {}).get("membership", "leave"))
            if membership in ("invite", "join", "leave", "ban"):
                await ctx.workspaces.set_membership(workspace.id, state_key, membership)
    await refresh_roles(ctx, workspace, state)


async def refresh_roles(
    ctx: Context, workspace: Workspace, state: Mapping[tuple[str, str], Mapping[str, Any]]
) -> None:
    """Roles follow the space's power levels; the host the bot speaks to follows the roles."""
    create = state.get(("m.room.create", ""))
    levels = state.get(("m.room.power_levels", ""))
    by_user = roles(levels, create, listed_users(levels, create) | {workspace.host}, ctx.namespace)
    await ctx.workspaces.set_roles(
        workspace.id, {u: r for u, r in by_user.items() if r != "member"}
    )
    host = choose_host(workspace.host, by_user)
    if host != workspace.host:
        log.info("workspace %s: host is now %s (was %s)", workspace.id, host, workspace.host)
        await ctx.workspaces.set_host(workspace.id, host)


async def set_role_level(ctx: Context, workspace: Workspace, user_id: str, level: int) -> None:
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


async def invite_everywhere(ctx: Context, workspace: Workspace, user_id: str) -> list[str]:
    """Invite a user to the space and its active sessions. Returns the rooms invited to."""
    invited = []
    rooms = [workspace.space_id] + [
        s.room_id for s in await ctx.sessions.of_workspace(workspace.id, active_only=True)
    ]
    for room_id in rooms:
        try:
            await ctx.matrix.invite(room_id, user_id)
            invited.append(room_id)
        except MatrixRequestError as e:
            # Already a member, or banned: nothing to do there.
            log.info("not inviting %s to %s: %s", user_id, room_id, e)
    if workspace.space_id in invited:
        await ctx.workspaces.set_membership(workspace.id, user_id, "invite")
    return invited
