"""Closed workspaces, tried as an ordinary Matrix user with bad intentions would, on the real
Synapse: each test is an attack that worked before (docs/security.md lists them and their rules).

- a room claiming a space as its parent is not adopted, and its text reaches no answer;
- a space claiming a room (another person's DM with the bot) is not adopted: nothing is read;
- a room whose invite said `is_direct` but that holds three people is not a DM;
- a delegate or host who left or was removed from the space has no role, at once;
- a ban holds against invite codes; codes can be listed and revoked, and a failed join keeps them;
- only `bot.workspace_creators` may make a workspace, also by having a space adopted;
- someone in no workspace costs no model call.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp

from bot.actions.card import ACTION_KEY
from bot.app import Doryo
from bot.core.config import Config
from bot.memory import LocalEmbedder
from tests.client import MatrixClient, MatrixClientError, replies_to
from tests.conftest import TEST_MODEL_ANSWER, Homeserver, running_bot
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.agent_helpers import final_answer
from tests.integration.test_actions import propose, react, status_of, team_with_member
from tests.integration.test_agent import indexed
from tests.integration.workspace_helpers import (
    accept,
    command,
    dm_with_bot,
    invited_rooms,
    new_team,
    start_session,
)
from tests.poll import eventually

SECRET = "the vault code is 7431"


async def kick(person: MatrixClient, room: str, user: str, *, ban: bool = False) -> None:
    verb = "ban" if ban else "kick"
    await person.request("POST", f"/v3/rooms/{quote(room)}/{verb}", {"user_id": user})


async def leave(person: MatrixClient, room: str) -> None:
    await person.request("POST", f"/v3/rooms/{quote(room)}/leave", {})


async def membership(person: MatrixClient, room: str, user: str) -> str:
    try:
        return str((await person.state(room, "m.room.member", user))["membership"])
    except MatrixClientError:
        return "none"


async def bot_joined(person: MatrixClient, room: str, bot: Doryo) -> None:
    await person.wait_for(
        room,
        lambda e: (
            e["type"] == "m.room.member"
            and e["state_key"] == bot.config.bot_user_id
            and e["content"].get("membership") == "join"
        ),
        timeout=20,
    )


def chat_requests(model: FakeOpenAI) -> list[Any]:
    return [r for r in model.requests if r.path.endswith("/chat/completions")]


def prompt_text(model: FakeOpenAI) -> str:
    return "\n".join(str(m.get("content")) for r in chat_requests(model) for m in r.messages)


async def memory_texts(bot: Doryo, workspace_id: str) -> list[str]:
    rows = await bot.ctx.db.fetch(
        "SELECT text FROM memory_items WHERE workspace_id = $1", workspace_id
    )
    return [str(r["text"]) for r in rows]


# A room claims a workspace -----------------------------------------------------------------------


async def test_a_room_naming_a_space_as_parent_is_not_adopted(
    homeserver: Homeserver, bot: Doryo, model_server: FakeOpenAI
) -> None:
    team = await new_team(homeserver, bot)
    session = await start_session(team, "Real work")
    mallory = await homeserver.user("mallory")
    room = await mallory.create_room(
        name="Totally part of Rocket",
        initial_state=[
            {"type": "m.space.parent", "state_key": team.space, "content": {"via": ["localhost"]}}
        ],
    )
    await mallory.send_text(room, f"Reminder for the team: {SECRET}")
    await mallory.invite(room, bot.config.bot_user_id)
    await bot_joined(mallory, room, bot)
    refused = await mallory.wait_for(
        room, lambda e: "not a session" in e["content"].get("body", ""), timeout=20
    )
    assert team.space not in refused[0]["content"]["body"]
    await mallory.send_text(room, f"Once more: {SECRET}")
    await bot.idle(20)

    assert await bot.ctx.sessions.get(room) is None
    listed = await command(team.alice, session, "!sessions")
    assert "Totally part" not in listed and room not in listed
    assert not any("7431" in t for t in await memory_texts(bot, team.workspace_id))

    question = await team.alice.send_text(session, "@ask what is the vault code?")
    _, content = await final_answer(team.alice, session, question)
    assert "7431" not in prompt_text(model_server)
    assert content["org.doryo.answer"]["sources"] == []

    # In the outsider's room (a DM, by its members: mallory and the bot), a question gets no
    # workspace's memory and costs no model call: mallory is in none.
    before = len(chat_requests(model_server))
    asked = await mallory.send_text(room, "@ask what does Rocket know?")
    answer = await mallory.wait_for_reply(room, asked)
    assert "not in a workspace" in answer["content"]["body"]
    assert len(chat_requests(model_server)) == before


# A space claims a room ---------------------------------------------------------------------------


async def test_a_space_listing_someone_elses_dm_gets_nothing(
    homeserver: Homeserver, bot: Doryo, model_server: FakeOpenAI
) -> None:
    team = await new_team(homeserver, bot)
    carol = await homeserver.user("carol")
    carol_dm = await dm_with_bot(carol, bot)
    await carol.send_text(carol_dm, f"note to self: {SECRET}")
    await bot.idle(20)

    await team.alice.set_state(team.space, "m.space.child", {"via": ["localhost"]}, carol_dm)
    told = await team.alice.wait_for(
        team.dm, lambda e: "not adopt" in e["content"].get("body", ""), timeout=20
    )
    assert "direct chat" in told[0]["content"]["body"]
    await bot.idle(20)
    assert await bot.ctx.sessions.get(carol_dm) is None
    assert (
        await bot.ctx.db.fetchval("SELECT count(*) FROM messages WHERE room_id = $1", carol_dm)
        == 0
    )
    assert not any("7431" in t for t in await memory_texts(bot, team.workspace_id))
    memory = await command(team.alice, team.dm, "!memory vault code")
    assert "7431" not in memory

    # Carol's DM is still hers, and still a DM: every message is for the bot (she is in no
    # workspace, so it says how to make or join one).
    asked = await carol.send_text(carol_dm, "are you still there?")
    answer = await carol.wait_for_reply(carol_dm, asked)
    assert "not in a workspace" in answer["content"]["body"]


async def test_a_room_added_by_a_member_without_power_in_it_is_not_adopted(
    homeserver: Homeserver, bot: Doryo
) -> None:
    """A delegate of the workspace lists a public room they are an ordinary member of."""
    team, session, bob = await team_with_member(homeserver, bot)
    await command(team.alice, session, f"!ws delegate {bob.user_id}")
    carol = await homeserver.user("carol")
    public = await carol.create_room(name="Carol's public room", preset="public_chat")
    await carol.send_text(public, f"carol's notes: {SECRET}")
    await bob.join(public)
    await bob.set_state(team.space, "m.space.child", {"via": ["localhost"]}, public)
    told = await team.alice.wait_for(
        team.dm, lambda e: "not adopt" in e["content"].get("body", ""), timeout=20
    )
    assert "power" in told[0]["content"]["body"]
    await bot.idle(20)
    assert await bot.ctx.sessions.get(public) is None
    assert not any("7431" in t for t in await memory_texts(bot, team.workspace_id))


async def test_a_room_added_by_its_admin_is_adopted_without_its_past(
    homeserver: Homeserver, bot: Doryo
) -> None:
    team, session, bob = await team_with_member(homeserver, bot)
    alice = team.alice
    room = await alice.create_room(
        name="Hand made",
        initial_state=[
            {
                "type": "m.room.join_rules",
                "content": {
                    "join_rule": "restricted",
                    "allow": [{"type": "m.room_membership", "room_id": team.space}],
                },
            }
        ],
    )
    await alice.send_text(room, f"before the bot: {SECRET}")
    await alice.set_state(team.space, "m.space.child", {"via": ["localhost"]}, room)
    notice = await alice.wait_for(
        room, lambda e: "!session history" in e["content"].get("body", ""), timeout=20
    )
    assert "earlier messages" in notice[0]["content"]["body"]
    await bot.idle(20)
    assert (await eventually(lambda: bot.ctx.sessions.get(room))).workspace_id == team.workspace_id
    # People's messages (the bot's own notice there is recorded as it arrives).
    count = "SELECT count(*) FROM messages WHERE room_id = $1 AND kind = 'user'"
    assert await bot.ctx.db.fetchval(count, room) == 0

    # From now on it is recorded.
    await alice.send_text(room, "after the bot came")
    # The homeserver may not have delivered it yet when the bot is idle: wait for it.
    await eventually(lambda: bot.ctx.db.fetchval(count, room), timeout=30)
    assert await bot.ctx.db.fetchval(count, room) == 1

    # Only an admin of the room may have its past read.
    await bob.join(room)
    refused = await command(bob, room, "!session history")
    assert "admin" in refused
    done = await command(alice, room, "!session history")
    assert "1 earlier message" in done, done
    await bot.idle(20)
    bodies = [
        r["body"]
        for r in await bot.ctx.db.fetch(
            "SELECT body FROM messages WHERE room_id = $1 ORDER BY seq", room
        )
    ]
    assert f"before the bot: {SECRET}" in bodies


async def test_an_invite_only_room_listed_by_the_space_needs_its_admin(
    homeserver: Homeserver, bot: Doryo
) -> None:
    """The bot cannot join; it asks to be invited. An invite from someone without a role in
    the workspace does not make it a session: the one who adds it must have the right."""
    team, session, bob = await team_with_member(homeserver, bot)
    alice = team.alice
    closed = await alice.create_room(name="Closed")
    await alice.set_state(team.space, "m.space.child", {"via": ["localhost"]}, closed)
    asked = await alice.wait_for(
        team.dm, lambda e: "Invite me there" in e["content"].get("body", "")
    )
    assert closed in asked[0]["content"]["body"]
    assert await bot.ctx.sessions.get(closed) is None  # not before the bot is in and has checked
    await alice.invite(closed, bot.config.bot_user_id)
    await alice.wait_for(
        closed, lambda e: "!session history" in e["content"].get("body", ""), timeout=20
    )
    assert (await bot.ctx.sessions.get(closed)) is not None

    # Bob (a member, no role) makes a room naming the space as its parent, tries to list it
    # and invites the bot: refused.
    own = await bob.create_room(
        name="Bob's",
        initial_state=[
            {"type": "m.space.parent", "state_key": team.space, "content": {"via": ["localhost"]}}
        ],
    )
    try:
        await bob.set_state(team.space, "m.space.child", {"via": ["localhost"]}, own)
    except MatrixClientError:
        pass  # a member cannot edit the space: fine, the invite below is the attack
    await bob.invite(own, bot.config.bot_user_id)
    await bot_joined(bob, own, bot)
    await bob.wait_for(own, lambda e: "not a session" in e["content"].get("body", ""), timeout=20)
    assert await bot.ctx.sessions.get(own) is None


# The DM flag -------------------------------------------------------------------------------------


async def test_a_direct_chat_of_three_is_not_a_dm(
    homeserver: Homeserver, bot: Doryo, model_server: FakeOpenAI
) -> None:
    team, session, bob = await team_with_member(homeserver, bot)
    await bob.send_text(session, f"for the team: {SECRET}")
    await bot.idle(20)
    mallory = await homeserver.user("mallory")
    room = await mallory.create_room(
        is_direct=True, invite=[bot.config.bot_user_id, bob.user_id], preset="trusted_private_chat"
    )
    await bob.join(room)
    await bot_joined(mallory, room, bot)
    await bot.idle(20)
    before = len(chat_requests(model_server))
    casual = await bob.send_text(room, "what was the vault code again?")
    asked = await bob.send_text(room, "@ask what was the vault code again?")
    answer = await bob.wait_for_reply(room, asked)
    assert "7431" not in answer["content"]["body"]
    assert "session" in answer["content"]["body"]
    await bot.idle(20)
    assert not [e for e in mallory.timeline.get(room, []) if replies_to(e) == casual], (
        "a casual message in a room of three is not a question to the bot"
    )
    assert len(chat_requests(model_server)) == before

    # Once the third person leaves, it is a DM again: every message is a question.
    await leave(mallory, room)
    await bot.idle(20)
    again = await bob.send_text(room, "and now?")
    _, content = await final_answer(bob, room, again)
    assert content["body"].startswith(TEST_MODEL_ANSWER)


# Roles follow membership -------------------------------------------------------------------------


async def test_a_kicked_delegate_confirms_nothing_and_can_be_undelegated(
    homeserver: Homeserver, bot: Doryo
) -> None:
    team, session, bob = await team_with_member(homeserver, bot)
    await command(team.alice, session, "!ws settings remove_from_sessions off")
    await command(team.alice, session, f"!ws delegate {bob.user_id}")
    card = await propose(team.alice, session, "@act create_task title=Leak")
    await kick(team.alice, team.space, bob.user_id)
    await bot.idle(20)

    await react(bob, session, card["event_id"], "✅")
    await bot.idle(20)
    assert bot.ctx.actions.runs_started == 0
    await team.alice.sync_once(timeout_ms=0)
    assert status_of(team.alice, session, card) == "awaiting_confirm"
    # The bot took his power away in the space and in the session.
    for room in (team.space, session):
        levels = await team.alice.state(room, "m.room.power_levels")
        assert bob.user_id not in levels.get("users", {}), room
    assert await membership(team.alice, session, bob.user_id) == "join"  # setting off

    undelegated = await command(team.alice, session, f"!ws undelegate {bob.user_id}")
    assert "not a member" not in undelegated
    assert bob.user_id in undelegated


async def test_someone_leaving_the_space_is_removed_from_its_sessions(
    homeserver: Homeserver, bot: Doryo
) -> None:
    team, session, bob = await team_with_member(homeserver, bot)
    await command(team.alice, session, f"!ws delegate {bob.user_id}")
    await leave(bob, team.space)

    async def removed() -> bool:
        return await membership(team.alice, session, bob.user_id) == "leave"

    await eventually(removed, timeout=20)
    levels = await team.alice.state(session, "m.room.power_levels")
    assert bob.user_id not in levels.get("users", {})


async def test_a_former_host_has_no_host_powers(homeserver: Homeserver, bot: Doryo) -> None:
    team, session, dave = await team_with_member(homeserver, bot)
    await command(team.alice, session, "!ws settings remove_from_sessions off")
    levels = await team.alice.state(team.space, "m.room.power_levels")
    levels["users"][dave.user_id] = 100
    await team.alice.set_state(team.space, "m.room.power_levels", levels)
    await bot.idle(20)
    card = await propose(team.alice, session, "@act create_task title=Leak")
    code = card["content"][ACTION_KEY]["id"]
    await leave(dave, team.space)
    await bot.idle(20)
    refused = await command(dave, session, f"!confirm {code}")
    assert "host" in refused and "Done" not in refused
    assert bot.ctx.actions.runs_started == 0
    refused = await command(dave, session, "!ws settings threads off")
    assert "host" in refused
    workspace = await bot.ctx.workspaces.get(team.workspace_id)
    assert workspace is not None and workspace.settings.threads


# Bans and invite codes ---------------------------------------------------------------------------


async def test_a_banned_member_cannot_come_back_with_a_code(
    homeserver: Homeserver, bot: Doryo
) -> None:
    team = await new_team(homeserver, bot)
    session = await start_session(team, "Work")
    code = (await command(team.alice, team.dm, "!ws invite 3")).split("`")[1]
    bob = await homeserver.user("bob")
    bob_dm = await dm_with_bot(bob, bot)
    assert "Welcome" in await command(bob, bob_dm, f"!ws join {code}")
    await accept(bob, team.space)
    await accept(bob, session)
    await kick(team.alice, team.space, bob.user_id, ban=True)
    await bot.idle(20)
    await eventually(lambda: _left(team.alice, session, bob.user_id), timeout=20)

    bob.invites.clear()
    again = await command(bob, bob_dm, f"!ws join {code}")
    assert "banned" in again and "Welcome" not in again
    assert session not in await invited_rooms(bob)
    listed = await command(team.alice, team.dm, "!ws invites")
    assert "2 uses left" in listed, listed  # bob's second try spent nothing


async def _left(person: MatrixClient, room: str, user: str) -> bool:
    return await membership(person, room, user) in ("leave", "ban")


async def test_invite_codes_are_listed_and_revoked(homeserver: Homeserver, bot: Doryo) -> None:
    team = await new_team(homeserver, bot)
    code = (await command(team.alice, team.dm, "!ws invite 5 3d")).split("`")[1]
    listed = await command(team.alice, team.dm, "!ws invites")
    assert code[:4] in listed and "5 uses left" in listed and team.alice.user_id in listed
    assert code not in listed  # the whole code is never shown again
    revoked = await command(team.alice, team.dm, f"!ws invite revoke {code[:4]}")
    assert "revoked" in revoked.lower()
    carol = await homeserver.user("carol")
    carol_dm = await dm_with_bot(carol, bot)
    refused = await command(carol, carol_dm, f"!ws join {code}")
    assert "Welcome" not in refused
    assert team.space not in await invited_rooms(carol)
    assert "no open invite codes" in (await command(team.alice, team.dm, "!ws invites")).lower()


async def test_a_join_that_fails_does_not_spend_the_code(
    homeserver: Homeserver,
    bot_config: Callable[..., Config],
    local_embedder: LocalEmbedder,
) -> None:
    """A space the host made and the bot has no power to invite in: the join fails, the code
    keeps its use."""
    async with running_bot(bot_config(), local_embedder) as bot:
        alice = await homeserver.user("alice")
        alice_dm = await dm_with_bot(alice, bot)
        space = await alice.create_room(
            name="Own space",
            creation_content={"type": "m.space"},
            power_level_content_override={"invite": 100},
        )
        await alice.invite(space, bot.config.bot_user_id)
        workspace = await eventually(lambda: bot.ctx.workspaces.by_space(space), timeout=20)
        await bot.ctx.workspaces.set_direct_choice(alice.user_id, workspace.id)
        code = (await command(alice, alice_dm, "!ws invite")).split("`")[1]
        carol = await homeserver.user("carol")
        carol_dm = await dm_with_bot(carol, bot)
        failed = await command(carol, carol_dm, f"!ws join {code}")
        assert "Welcome" not in failed
        listed = await command(alice, alice_dm, "!ws invites")
        assert "1 use left" in listed, listed


# Who may make a workspace, and who costs a model call --------------------------------------------


async def test_workspace_creators_hold_for_adopted_spaces(
    homeserver: Homeserver,
    bot_config: Callable[..., Config],
    local_embedder: LocalEmbedder,
) -> None:
    config = bot_config(bot={"workspace_creators": [r"@alice_.*:localhost"]})
    async with running_bot(config, local_embedder) as bot:
        mallory = await homeserver.user("mallory")
        space = await mallory.create_room(name="Mine", creation_content={"type": "m.space"})
        await mallory.invite(space, bot.config.bot_user_id)

        async def bot_left() -> bool:
            await mallory.sync_once(timeout_ms=200)
            return await membership(mallory, space, bot.config.bot_user_id) == "leave"

        await eventually(bot_left, timeout=20)
        assert await bot.ctx.workspaces.by_space(space) is None


async def test_someone_in_no_workspace_costs_no_model_call(
    homeserver: Homeserver, bot: Doryo, model_server: FakeOpenAI
) -> None:
    carol = await homeserver.user("carol")
    dm = await dm_with_bot(carol, bot)
    before = len(chat_requests(model_server))
    asked = await carol.send_text(dm, "what is the meaning of life?")
    answer = await carol.wait_for_reply(dm, asked)
    assert "!ws create" in answer["content"]["body"] and "!ws join" in answer["content"]["body"]
    await bot.idle(20)
    assert len(chat_requests(model_server)) == before


# Redactions ------------------------------------------------------------------------------------


async def test_a_redaction_without_the_right_to_it_deletes_nothing(
    homeserver: Homeserver, bot: Doryo
) -> None:
    """Another server can send a redaction nobody had the right to: the homeserver passes it on
    (and does not apply it). Nor may a redaction in one room delete another room's message."""
    team, session, bob = await team_with_member(homeserver, bot)
    other = await start_session(team, "Other")
    fact = await team.alice.send_text(session, SECRET)
    now = int(time.time() * 1000)

    def redaction(n: int, room: str, sender: str) -> dict[str, Any]:
        return {
            "type": "m.room.redaction",
            "room_id": room,
            "sender": sender,
            "redacts": fact,
            "content": {"redacts": fact},
            "event_id": f"$forged{n}-{uuid.uuid4().hex}",
            "origin_server_ts": now,
        }

    forged = [
        redaction(1, session, "@mallory:evil.example"),  # not the author, no power
        redaction(2, session, bob.user_id),  # a member without the power to redact
        redaction(3, other, team.alice.user_id),  # the author, but from another room
    ]
    token = bot.config.appservice.hs_token.get_secret_value()
    url = f"http://127.0.0.1:{bot.config.appservice.port}/_matrix/app/v1/transactions/"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        async with http.put(url + uuid.uuid4().hex, json={"events": forged}) as response:
            assert response.status == 200
    marker = await team.alice.send_text(session, "after the forged redactions")
    await indexed(bot, marker, *[e["event_id"] for e in forged])
    assert SECRET in await memory_texts(bot, team.workspace_id)
    body = await bot.ctx.db.fetchval("SELECT body FROM messages WHERE event_id = $1", fact)
    assert body == SECRET

    # Her own redaction, in the room, is honoured.
    await team.alice.request("PUT", f"/v3/rooms/{quote(session)}/redact/{quote(fact)}/r1", {})
    marker = await team.alice.send_text(session, "after her redaction")
    await indexed(bot, marker)
    assert SECRET not in await memory_texts(bot, team.workspace_id)
