"""Session rooms on the Matrix side: start one in a space, adopt one added by hand, end one.

A session the bot starts is a child of the space (m.space.child in the space, m.space.parent in
the room), joinable by the space's members (restricted join rule), with the workspace's members
invited. A room someone adds to the space by hand is adopted: the bot joins it (or asks the host
for an invite when it cannot) and takes part from then on, after reading its recent history.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from appservice.errors import MatrixRequestError
from bot import strings
from bot.history.recorder import backfill
from bot.sessions.store import Session
from bot.workspaces.roles import DELEGATE_LEVEL, HOST_LEVEL
from bot.workspaces.spaces import SPACE_CHILD
from bot.workspaces.store import Workspace

if TYPE_CHECKING:
    from bot.context import Context

log = logging.getLogger(__name__)


def room_link(room_id: str, domain: str) -> str:
    return f"https://matrix.to/#/{room_id}?via={domain}"


async def start_session(
    ctx: Context, workspace: Workspace, topic: str, started_by: str, origin_event: str
) -> Session:
    """A new session room in the workspace's space. Handled again, `origin_event` finds it."""
    if (made := await ctx.sessions.by_origin(origin_event)) is not None:
        return made
    domain = ctx.config.homeserver.domain
    members = await ctx.workspaces.members(workspace.id)
    # Invited members too: a host who has not accepted the space yet still sees the session.
    joined = [
        m.user_id
        for m in members
        if m.membership in ("join", "invite") and m.user_id != ctx.bot_user_id
    ]
    levels = {
        m.user_id: HOST_LEVEL if m.role == "host" else DELEGATE_LEVEL
        for m in members
        if m.role in ("host", "delegate")
    }
    name = topic or strings.SESSION_DEFAULT_NAME.format(date=datetime.now(UTC).strftime("%b %d"))
    room_id = await ctx.matrix.create_room(
        {
            "name": name,
            "topic": topic,
            "preset": "private_chat",
            "visibility": "private",
            "invite": joined,
            "power_level_content_override": {"users": levels},
            "initial_state": [
                {
                    "type": "m.space.parent",
                    "state_key": workspace.space_id,
                    "content": {"via": [domain], "canonical": True},
                },
                {
                    "type": "m.room.join_rules",
                    "content": {
                        "join_rule": "restricted",
                        "allow": [{"type": "m.room_membership", "room_id": workspace.space_id}],
                    },
                },
                {"type": "m.room.history_visibility", "content": {"history_visibility": "shared"}},
                {"type": "m.room.guest_access", "content": {"guest_access": "forbidden"}},
            ],
        }
    )
    # Recorded before the space lists it, so the m.space.child event finds a known session.
    session = await ctx.sessions.add(
        room_id, workspace.id, topic, started_by, adopted=False, origin_event=origin_event
    )
    await ctx.rooms.set_membership(room_id, "join")
    await ctx.matrix.send_state(
        workspace.space_id, SPACE_CHILD, {"via": [domain], "suggested": True}, room_id
    )
    log.info("started session %s in workspace %s", room_id, workspace.id)
    return session


async def adopt_child(ctx: Context, workspace: Workspace, room_id: str, added_by: str) -> None:
    """A room was added to the space by hand: join it and make it a session."""
    try:
        await ctx.matrix.join(room_id)
    except MatrixRequestError as e:
        # Not joinable by the bot (invite only, say): ask the host to invite it.
        log.info("cannot join %s added to %s (%s); asking for an invite", room_id, workspace.id, e)
        # Known from now on: the invite that follows finds the workspace it belongs to.
        await ctx.sessions.add(room_id, workspace.id, "", added_by, adopted=True)
        await ask_host(
            ctx,
            workspace,
            strings.INVITE_ME_TO.format(
                room=room_link(room_id, ctx.config.homeserver.domain), name=workspace.name
            ),
        )
        return
    await take_part(ctx, workspace, room_id, added_by)


async def take_part(
    ctx: Context, workspace: Workspace, room_id: str, added_by: str | None
) -> None:
    """The bot is in a room of the workspace's space: record it as a session, read its past."""
    state = await ctx.matrix.get_state(room_id)
    topic = ""
    for event in state:
        if event.get("type") == "m.room.topic":
            topic = str(event.get("content", {}).get("topic", ""))
        elif event.get("type") == "m.room.name" and not topic:
            topic = str(event.get("content", {}).get("name", ""))
    session = await ctx.sessions.add(room_id, workspace.id, topic, added_by, adopted=True)
    await ctx.rooms.set_membership(room_id, "join")
    stored = await backfill(ctx, session)
    log.info(
        "adopted %s into workspace %s (%d earlier messages read)", room_id, workspace.id, stored
    )


async def ask_host(ctx: Context, workspace: Workspace, text: str) -> None:
    """Tell the host something in a direct chat with them (made if there is none)."""
    room_id = await direct_room(ctx, workspace.host)
    await ctx.matrix.send_markdown(room_id, text, notice=True)


async def direct_room(ctx: Context, user_id: str) -> str:
    """The bot's direct chat with a person: the one on record, or a new one."""
    existing = await ctx.rooms.direct_with(user_id)
    if existing is not None:
        return existing
    room_id = await ctx.matrix.create_room(
        {"is_direct": True, "invite": [user_id], "preset": "trusted_private_chat"}
    )
    await ctx.rooms.record_invite(room_id, user_id, True)
    await ctx.rooms.set_membership(room_id, "join")
    return room_id


def summary_text(
    count: int, people: list[str], first: datetime | None, last: datetime | None, topic: str
) -> str:
    """The summary of an ended session, from its history alone (no model needed)."""
    if count == 0:
        return strings.SUMMARY_EMPTY.format(topic=topic or strings.SESSION_UNTITLED)
    assert first is not None and last is not None
    return strings.SUMMARY.format(
        topic=topic or strings.SESSION_UNTITLED,
        count=count,
        people=", ".join(people),
        first=first.strftime("%Y-%m-%d %H:%M"),
        last=last.strftime("%Y-%m-%d %H:%M UTC"),
    )


def space_child_content(event: dict[str, Any]) -> tuple[str, bool] | None:
    """(child room ID, is it in the space) of an m.space.child event, or None."""
    child = event.get("state_key")
    if not isinstance(child, str) or not child.startswith("!"):
        return None
    via = event.get("content", {}).get("via")
    return child, isinstance(via, list) and bool(via)
