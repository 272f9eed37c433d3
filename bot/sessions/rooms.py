"""Session rooms on the Matrix side: start one in a space, and reach people in direct chats.

A session the bot starts is a child of the space (m.space.child in the space, m.space.parent in
the room), joinable by the space's members (restricted join rule), with the workspace's members
invited. Rooms people add to the space by hand: bot.sessions.adoption.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from appservice.matrix import ENCRYPTION_STATE
from bot.core import strings
from bot.rooms.direct import direct_room
from bot.sessions.store import Session
from bot.workspaces.context import WorkspacesContext
from bot.workspaces.roles import DELEGATE_LEVEL, HOST_LEVEL
from bot.workspaces.spaces import SPACE_CHILD
from bot.workspaces.store import Workspace

log = logging.getLogger(__name__)


def room_link(room_id: str, domain: str) -> str:
    return f"https://matrix.to/#/{room_id}?via={domain}"


async def start_session(
    ctx: WorkspacesContext, workspace: Workspace, topic: str, started_by: str, origin_event: str
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
        if m.role in ("host", "delegate") and m.membership in ("join", "invite")
    }
    encrypted = workspace.settings.encrypted and ctx.config.encryption.enabled
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
                *([ENCRYPTION_STATE] if encrypted else []),
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


async def ask_host(ctx: WorkspacesContext, workspace: Workspace, text: str) -> None:
    """Tell the host something in a direct chat with them (made if there is none)."""
    room_id = await direct_room(ctx, workspace.host)
    await ctx.matrix.send_markdown(room_id, text, notice=True)


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
