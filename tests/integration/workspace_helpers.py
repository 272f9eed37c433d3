"""Steps the workspace tests share: a DM with the bot, a command and its answer, a workspace."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from bot.app import Doryo
from tests.client import JSON, MatrixClient, replies_to
from tests.conftest import Homeserver


async def dm_with_bot(person: MatrixClient, bot: Doryo) -> str:
    bot_id = bot.config.bot_user_id
    room = await person.create_room(invite=[bot_id], is_direct=True, preset="trusted_private_chat")
    await person.wait_for(room, lambda e: e["sender"] == bot_id and e["type"] == "m.room.message")
    return room


async def command(person: MatrixClient, room: str, text: str, timeout: float = 20) -> str:
    """Send a command; return the body of the bot's answer to it."""
    event_id = await person.send_text(room, text)
    answer = await person.wait_for_reply(room, event_id, timeout=timeout)
    return str(answer["content"]["body"])


async def invited_rooms(person: MatrixClient, timeout: float = 10) -> dict[str, list[JSON]]:
    await person.sync_once(timeout_ms=0)
    return person.invites


async def accept(person: MatrixClient, room: str) -> None:
    await person.join(room)
    person.invites.pop(room, None)


async def hierarchy(person: MatrixClient, space: str) -> list[str]:
    result = await person.request("GET", f"/v1/rooms/{quote(space)}/hierarchy")
    return [r["room_id"] for r in result["rooms"]]


def link_target(text: str) -> str:
    found = re.search(r"matrix\.to/#/(![^?\s)]+)", text)
    assert found, text
    return found[1]


@dataclass
class Team:
    """A workspace made through the bot: host alice, with her DM and the space."""

    alice: MatrixClient
    dm: str
    workspace_id: str
    space: str


async def new_team(homeserver: Homeserver, bot: Doryo, name: str = "Rocket") -> Team:
    alice = await homeserver.user("alice")
    dm = await dm_with_bot(alice, bot)
    answer = await command(alice, dm, f"!ws create {name}")
    assert f"Workspace **{name}** is ready" in answer, answer
    workspace = (await bot.ctx.workspaces.of_member(alice.user_id))[0]
    await accept(alice, workspace.space_id)
    return Team(alice, dm, workspace.id, workspace.space_id)


async def start_session(team: Team, topic: str, room: str | None = None) -> str:
    answer = await command(team.alice, room or team.dm, f"!session start {topic}")
    session = link_target(answer)
    await accept(team.alice, session)
    return session


def bodies(person: MatrixClient, room: str, sender: str) -> list[str]:
    return [
        e["content"].get("body", "")
        for e in person.timeline.get(room, [])
        if e["sender"] == sender and e["type"] == "m.room.message"
    ]


def answers_to(person: MatrixClient, room: str, event_id: str) -> list[dict[str, Any]]:
    return [e for e in person.timeline.get(room, []) if replies_to(e) == event_id]
