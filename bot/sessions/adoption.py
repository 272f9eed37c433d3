"""Which rooms become a workspace's sessions: only with both sides' agreement, decided by someone
with the right to (docs/security.md).

A room becomes a session of workspace W when, read from the homeserver at that moment:

- W's space lists it (an `m.space.child` with `via`): the space's side;
- the person deciding — who listed it in the space, or who invited the bot — is W's host or a
  delegate now (power in the space, and still its member);
- that person is in the room, with the power to name its space there (`m.space.parent`): the
  room's side;
- it is not the bot's direct chat with someone, not a space, and not another workspace's session.

A room that only names W as its parent, or a space that only lists a room, gets nothing. Once
adopted, what is said there from then on is recorded; its earlier messages are read only when an
admin of the room asks, in the room (`!session history`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from appservice.errors import MatrixRequestError
from bot.commands.call import CommandCall
from bot.core import power, strings
from bot.core.errors import UserError
from bot.core.replies import Replier
from bot.history.recorder import backfill
from bot.rooms.direct import tell
from bot.rooms.members import is_dm, read_members
from bot.sessions.rooms import ask_host, room_link
from bot.sessions.store import Session
from bot.workspaces.access import current_role
from bot.workspaces.spaces import SPACE_CHILD, is_space
from bot.workspaces.store import Workspace

if TYPE_CHECKING:
    from bot.context import Context

log = logging.getLogger(__name__)

SPACE_PARENT = "m.space.parent"
State = Mapping[tuple[str, str], Mapping[str, Any]]


def by_key(events: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], Mapping[str, Any]]:
    return {(str(e.get("type")), str(e.get("state_key"))): e for e in events}


def claimed_parents(state: State) -> list[str]:
    """The spaces a room's own state names as its parent (a claim, nothing more)."""
    return [
        key
        for (event_type, key), event in state.items()
        if event_type == SPACE_PARENT and event.get("content", {}).get("via")
    ]


async def listed_by_space(ctx: Context, workspace: Workspace, room_id: str) -> bool:
    child = await ctx.matrix.get_state_event(workspace.space_id, SPACE_CHILD, room_id)
    via = (child or {}).get("via")
    return isinstance(via, list) and bool(via)


def may_name_parent(state: State, user_id: str) -> bool:
    """Whether `user_id` is in the room with the power to add it to a space."""
    member = state.get(("m.room.member", user_id), {}).get("content", {})
    if member.get("membership") != "join":
        return False
    levels = state.get(("m.room.power_levels", ""))
    create = state.get(("m.room.create", ""))
    return power.can_send_state(levels, create, user_id, SPACE_PARENT)


async def refusal(
    ctx: Context, workspace: Workspace, room_id: str, deciders: Iterable[str], state: State
) -> tuple[str | None, str]:
    """(None, who decided) if this room may become a session of `workspace`, decided by one of
    `deciders`; (why not, "") if not."""
    if is_space(state.get(("m.room.create", ""), {}).get("content")):
        return strings.WHY_SPACE, ""
    if await ctx.workspaces.by_space(room_id) is not None:
        return strings.WHY_SPACE, ""
    session = await ctx.sessions.get(room_id)
    if session is not None and session.workspace_id != workspace.id:
        return strings.WHY_OTHER_WORKSPACE, ""
    if not await listed_by_space(ctx, workspace, room_id):
        return strings.WHY_NOT_LISTED, ""
    why = None
    for user in dict.fromkeys(deciders):
        if await current_role(ctx, workspace, user) not in ("host", "delegate"):
            why = why or strings.WHY_NO_ROLE.format(user=user)
        elif not may_name_parent(state, user):
            why = strings.WHY_NO_POWER.format(user=user)
        else:
            return None, user
    return why or strings.WHY_NO_ROLE.format(user="nobody"), ""


async def on_listed(
    ctx: Context, workspace: Workspace, room_id: str, added_by: str, reply: Replier
) -> None:
    """The space now lists `room_id` (an m.space.child event by `added_by`)."""
    if await ctx.sessions.get(room_id) is not None:
        return  # a session already (the bot made it, or it was adopted before)
    if await is_dm(ctx, room_id):
        await _refused(ctx, workspace, room_id, added_by, strings.WHY_DIRECT, reply)
        return
    room = await ctx.rooms.get(room_id)
    was_in = room is not None and room.membership == "join"
    if not was_in:
        if await current_role(ctx, workspace, added_by) not in ("host", "delegate"):
            await _refused(
                ctx, workspace, room_id, added_by, strings.WHY_NO_ROLE.format(user=added_by), reply
            )
            return
        try:
            await ctx.matrix.join(room_id)
        except MatrixRequestError as e:
            # Not joinable by the bot (invite only, say): the invite that follows is checked
            # like this listing, then.
            log.info(
                "cannot join %s listed in %s (%s); asking for an invite", room_id, workspace.id, e
            )
            await ctx.sessions.add_pending(room_id, workspace.id, added_by)
            await ask_host(
                ctx,
                workspace,
                strings.INVITE_ME_TO.format(
                    room=room_link(room_id, ctx.config.homeserver.domain), name=workspace.name
                ),
            )
            return
        await ctx.rooms.set_membership(room_id, "join")
    events = await ctx.matrix.get_state(room_id)
    await read_members(ctx, room_id, events)
    state = by_key(events)
    why, _ = await refusal(ctx, workspace, room_id, [added_by], state)
    if why is not None:
        if not was_in:
            await ctx.matrix.leave(room_id)
            await ctx.rooms.set_membership(room_id, "leave")
        await _refused(ctx, workspace, room_id, added_by, why, reply)
        return
    await adopt(ctx, workspace, room_id, added_by, state, reply)


async def on_invited(
    ctx: Context, room_id: str, inviter: str, events: list[Any], reply: Replier
) -> bool:
    """The bot joined a room it was invited to: a session if a workspace listed it and the rules
    hold. True if it is a session now; False after saying in the room why it is not (when the
    room claims a workspace), or silently (when it claims none)."""
    if await ctx.sessions.get(room_id) is not None:
        return True  # a session before (the bot was away and came back)
    state = by_key(events)
    pending = await ctx.sessions.pending(room_id)
    candidates = {workspace_id: [inviter, added_by] for workspace_id, added_by in pending}
    for space in claimed_parents(state):
        workspace = await ctx.workspaces.by_space(space)
        if workspace is not None:
            candidates.setdefault(workspace.id, [inviter])
    for workspace_id, deciders in candidates.items():
        workspace = await ctx.workspaces.get(workspace_id)
        if workspace is None:
            continue
        why, by = await refusal(ctx, workspace, room_id, deciders, state)
        if why is None:
            await adopt(ctx, workspace, room_id, by, state, reply)
            return True
        log.info(
            "not adopting %s into %s (invited by %s): %s", room_id, workspace.id, inviter, why
        )
    if candidates:
        await reply.send_notice(strings.ADOPT_REFUSED_ROOM, reply_to=None)
    return False


async def adopt(
    ctx: Context, workspace: Workspace, room_id: str, by: str, state: State, reply: Replier
) -> Session:
    """Record the room as a session from now on, and say so there (its past is not read)."""
    topic = str(state.get(("m.room.topic", ""), {}).get("content", {}).get("topic", ""))
    topic = topic or str(state.get(("m.room.name", ""), {}).get("content", {}).get("name", ""))
    session = await ctx.sessions.add(room_id, workspace.id, topic, by, adopted=True)
    await ctx.sessions.drop_pending(room_id)
    await ctx.rooms.set_membership(room_id, "join")
    await reply.send_notice(
        strings.SESSION_ADOPTED.format(name=workspace.name, by=by), reply_to=None, room_id=room_id
    )
    log.info("adopted %s into workspace %s (decided by %s)", room_id, workspace.id, by)
    return session


async def _refused(
    ctx: Context, workspace: Workspace, room_id: str, added_by: str, why: str, reply: Replier
) -> None:
    log.info("not adopting %s into %s (listed by %s): %s", room_id, workspace.id, added_by, why)
    text = strings.ADOPT_REFUSED_HOST.format(
        room=room_link(room_id, ctx.config.homeserver.domain), name=workspace.name, reason=why
    )
    for person in dict.fromkeys([workspace.host, added_by]):
        if await current_role(ctx, workspace, person) is not None:
            await tell(ctx, person, text, reply)


async def session_history(call: CommandCall) -> None:
    """`!session history`: an admin of an adopted room lets the bot read its earlier messages."""
    ctx = call.ctx
    session = await ctx.sessions.get(call.room_id)
    if session is None:
        raise UserError(strings.NOT_A_SESSION)
    if not session.adopted:
        raise UserError(strings.HISTORY_NOT_ADOPTED)
    if session.history_read_by is not None:
        raise UserError(strings.HISTORY_ALREADY.format(by=session.history_read_by))
    state = by_key(await ctx.matrix.get_state(call.room_id))
    if not may_name_parent(state, call.sender):
        raise UserError(strings.HISTORY_ADMINS_ONLY)
    workspace = await ctx.workspaces.get(session.workspace_id)
    assert workspace is not None
    count = await backfill(ctx, session, before=session.started_at)
    await ctx.sessions.set_history_read(session.room_id, call.sender)
    await call.reply.send_notice(strings.HISTORY_READ.format(count=count, name=workspace.name))
