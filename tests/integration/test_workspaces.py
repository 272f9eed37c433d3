"""Workspaces end to end on the real Synapse: create, invite by user and by code, join by code,
roles, delegation, settings, adoption of a space, and who may do what."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import aiohttp

from bot.app import Doryo
from bot.memory import MemoryInput
from bot.workspaces import invites, retention
from tests.conftest import Homeserver
from tests.integration.workspace_helpers import (
    accept,
    command,
    dm_with_bot,
    invited_rooms,
    new_team,
    start_session,
)
from tests.poll import eventually


async def test_create_workspace_from_a_dm(homeserver: Homeserver, bot: Doryo) -> None:
    team = await new_team(homeserver, bot, "Rocket")
    levels = await team.alice.state(team.space, "m.room.power_levels")
    assert levels["users"][team.alice.user_id] == 100
    assert levels.get("users_default", 0) == 0
    create = await team.alice.state(team.space, "m.room.create")
    assert create["type"] == "m.space"
    assert create["room_version"] == "12"  # the bot created it: it outranks every level
    workspace = await bot.ctx.workspaces.get(team.workspace_id)
    assert workspace is not None and workspace.host == team.alice.user_id


async def test_invite_by_user_reaches_space_and_sessions(
    homeserver: Homeserver, bot: Doryo
) -> None:
    team = await new_team(homeserver, bot)
    session = await start_session(team, "Launch")
    bob = await homeserver.user("bob")
    answer = await command(team.alice, session, f"!ws invite {bob.user_id}")
    assert "1 active session" in answer, answer
    invites_for_bob = await invited_rooms(bob)
    assert {team.space, session} <= set(invites_for_bob)
    await accept(bob, team.space)
    await accept(bob, session)
    bad = await command(team.alice, session, "!ws invite @bob")
    assert "not user IDs" in bad


async def test_invite_codes(homeserver: Homeserver, bot: Doryo) -> None:
    team = await new_team(homeserver, bot)
    answer = await command(team.alice, team.dm, "!ws invite")
    code = answer.split("`")[1]
    assert invites.normalize(code) is not None
    # Only a hash is stored.
    stored = await bot.ctx.db.fetchval(
        "SELECT count(*) FROM workspace_invites WHERE code_hash = $1", invites.code_hash(code)
    )
    assert stored == 1
    assert not await bot.ctx.db.fetchval(
        "SELECT count(*) FROM workspace_invites WHERE code_hash::text LIKE $1", f"%{code}%"
    )

    carol = await homeserver.user("carol")
    carol_dm = await dm_with_bot(carol, bot)
    joined = await command(carol, carol_dm, f"!ws join {code.lower()}")  # case does not matter
    assert "Welcome to **Rocket**" in joined, joined
    assert team.space in await invited_rooms(carol)

    dave = await homeserver.user("dave")
    dave_dm = await dm_with_bot(dave, bot)
    assert "used up" in await command(dave, dave_dm, f"!ws join {code}")

    # A code good for two, past its expiry.
    many = (await command(team.alice, team.dm, "!ws invite 2 1d")).split("`")[1]
    await bot.ctx.db.execute(
        "UPDATE workspace_invites SET expires_at = $2 WHERE code_hash = $1",
        invites.code_hash(many),
        datetime.now(UTC) - timedelta(minutes=1),
    )
    assert "expired" in await command(dave, dave_dm, f"!ws join {many}")
    assert "`!ws invite` takes" in await command(team.alice, team.dm, "!ws invite lots")


async def test_guessing_codes_gets_nowhere(homeserver: Homeserver, bot: Doryo) -> None:
    team = await new_team(homeserver, bot)
    await command(team.alice, team.dm, "!ws invite")  # a real code exists
    eve = await homeserver.user("eve")
    eve_dm = await dm_with_bot(eve, bot)
    for _ in range(5):
        answer = await command(eve, eve_dm, f"!ws join {invites.new_code()}")
        assert "not valid" in answer
    assert "Too many wrong invite codes" in await command(
        eve, eve_dm, f"!ws join {invites.new_code()}"
    )
    assert await invited_rooms(eve) == {}
    assert await bot.ctx.workspaces.member(team.workspace_id, eve.user_id) is None


async def test_members_roles_and_host_only(homeserver: Homeserver, bot: Doryo) -> None:
    team = await new_team(homeserver, bot)
    session = await start_session(team, "Roles")
    bob = await homeserver.user("bob")
    await command(team.alice, session, f"!ws invite {bob.user_id}")
    await accept(bob, team.space)
    await accept(bob, session)

    # A member trying a host-only command is told who may.
    for host_only in ("!ws invite", f"!ws delegate {bob.user_id}", "!ws settings", "!ws members"):
        answer = await command(bob, session, host_only)
        assert f"Only the workspace's host ({team.alice.user_id})" in answer, (host_only, answer)

    members = await command(team.alice, session, "!ws members")
    assert f"{team.alice.user_id} — host" in members and f"{bob.user_id} — member" in members

    assert "now a delegate" in await command(team.alice, session, f"!ws delegate {bob.user_id}")
    levels = await team.alice.state(team.space, "m.room.power_levels")
    assert levels["users"][bob.user_id] == 50
    assert (await team.alice.state(session, "m.room.power_levels"))["users"][bob.user_id] == 50
    await wait_role(bot, team.workspace_id, bob.user_id, "delegate")
    # A delegate is still not the host.
    assert "Only the workspace's host" in await command(bob, session, "!ws settings")

    assert "no longer a delegate" in await command(
        team.alice, session, f"!ws undelegate {bob.user_id}"
    )
    await wait_role(bot, team.workspace_id, bob.user_id, "member")
    stranger = "@nobody:localhost"
    assert "is not a member" in await command(team.alice, session, f"!ws delegate {stranger}")


async def wait_role(bot: Doryo, workspace_id: str, user: str, role: str) -> None:
    async def has_role() -> bool:
        member = await bot.ctx.workspaces.member(workspace_id, user)
        return member is not None and member.role == role

    await eventually(has_role, timeout=10)


async def test_settings(homeserver: Homeserver, bot: Doryo) -> None:
    team = await new_team(homeserver, bot)
    shown = await command(team.alice, team.dm, "!ws settings")
    assert "`threads` = `on`" in shown and "`act` = `members`" in shown
    assert "`threads` = `off`" in await command(team.alice, team.dm, "!ws settings threads off")
    assert "`budget` = `25.0`" in await command(team.alice, team.dm, "!ws settings budget $25")
    assert "`act` = `host`" in await command(team.alice, team.dm, "!ws settings act host")
    assert "not a valid act" in await command(team.alice, team.dm, "!ws settings act everyone")
    assert "no setting `colour`" in await command(team.alice, team.dm, "!ws settings colour red")
    stored = await bot.ctx.workspaces.get(team.workspace_id)
    assert stored is not None
    assert (stored.settings.threads, stored.settings.budget_usd, stored.settings.act) == (
        False,
        25.0,
        "host",
    )


async def test_ws_use_picks_the_workspace_of_a_dm(homeserver: Homeserver, bot: Doryo) -> None:
    team = await new_team(homeserver, bot, "First")
    await command(team.alice, team.dm, "!ws create Second")
    # The latest created applies; `!ws use` switches.
    assert "**First**" in await command(team.alice, team.dm, "!ws use first")
    listing = await command(team.alice, team.dm, "!sessions")
    assert "First" in listing
    assert "no workspace called" in await command(team.alice, team.dm, "!ws use third")


async def test_a_space_made_by_a_host_is_adopted(homeserver: Homeserver, bot: Doryo) -> None:
    alice = await homeserver.user("alice")
    bot_id = bot.config.bot_user_id
    space = await alice.create_room(
        name="Alice's own",
        creation_content={"type": "m.space"},
        invite=[bot_id],
        power_level_content_override={"users": {bot_id: 100}},
    )
    workspace = await eventually(lambda: bot.ctx.workspaces.by_space(space))
    assert workspace.host == alice.user_id and not workspace.created_by_bot
    dm = await dm_with_bot(alice, bot)
    answer = await command(alice, dm, "!session start Adopted space")
    assert "started" in answer, answer


async def test_a_space_from_someone_without_power_is_left(
    homeserver: Homeserver, bot: Doryo
) -> None:
    alice, bob = await homeserver.user("alice"), await homeserver.user("bob")
    bot_id = bot.config.bot_user_id
    space = await alice.create_room(creation_content={"type": "m.space"}, invite=[bob.user_id])
    await bob.join(space)
    await bob.invite(space, bot_id)  # bob has power 0

    async def left() -> bool:
        room = await bot.ctx.rooms.get(space)
        return room is not None and room.membership == "leave"

    await eventually(left)
    assert await bot.ctx.workspaces.by_space(space) is None


async def test_commands_outside_a_workspace(homeserver: Homeserver, bot: Doryo) -> None:
    alice = await homeserver.user("alice")
    dm = await dm_with_bot(alice, bot)
    assert "not in a workspace yet" in await command(alice, dm, "!session start x")
    # A room of three (with the bot, it is not a DM) that no workspace adopted.
    bob = await homeserver.user("bob")
    room = await alice.create_room(invite=[bot.config.bot_user_id, bob.user_id])
    await bob.join(room)
    await alice.wait_for(room, lambda e: e["sender"] == bot.config.bot_user_id)
    assert "not part of a workspace" in await command(alice, room, "!sessions")


async def test_retention_deletes_exactly_what_is_older_than_the_line(
    homeserver: Homeserver, bot: Doryo
) -> None:
    """The setting was stored and never enforced: a team's old messages stayed forever."""
    team = await new_team(homeserver, bot, "Keeps")
    room = await start_session(team, "Old and new")
    assert bot.ctx.memory is not None
    now = datetime.now(UTC)
    said: dict[str, datetime] = {}
    for n in range(30):
        said[f"$old{n}-{uuid.uuid4().hex}"] = now - timedelta(days=40, minutes=n)
    for n in range(5):
        said[f"$new{n}-{uuid.uuid4().hex}"] = now - timedelta(days=29)
    for event_id, sent_at in said.items():
        await bot.ctx.history.add(
            room, event_id, team.alice.user_id, "user", f"note {event_id}", sent_at
        )
    await bot.ctx.memory.indexer.add(
        [
            MemoryInput(
                team.workspace_id,
                f"note {e}",
                room_id=room,
                event_id=e,
                sender=team.alice.user_id,
                created_at=t,
            )
            for e, t in said.items()
        ]
        + [
            MemoryInput(
                team.workspace_id,
                "The alarm code is 1234",
                kind="fact",
                created_at=now - timedelta(days=400),
            )
        ]
    )
    await bot.ctx.memory.indexer.flush(60)
    assert "`retention` = `30`" in await command(team.alice, team.dm, "!ws settings retention 30")
    workspace = await bot.ctx.workspaces.get(team.workspace_id)
    assert workspace is not None

    # People keep talking while it runs: none of that goes.
    live = asyncio.gather(*(team.alice.send_text(room, f"live {n}") for n in range(5)))
    run = await retention.apply(bot.ctx, workspace, now=now, batch=7)
    live_events = await live

    # idle() knows only what the homeserver has pushed: wait for the live messages themselves.
    async def recorded() -> bool:
        found = await bot.ctx.db.fetchval(
            "SELECT count(*) FROM messages WHERE event_id = any($1::text[])", live_events
        )
        return bool(found == len(live_events))

    await eventually(recorded, timeout=30)
    await bot.idle(30)

    assert run is not None and (run.messages, run.memories) == (30, 30)
    kept = await bot.ctx.db.fetch(
        "SELECT event_id, sent_at FROM messages WHERE room_id = $1", room
    )
    kept_ids = {r["event_id"] for r in kept}
    assert not [r for r in kept if r["sent_at"] < now - timedelta(days=30)]
    assert {e for e in said if e.startswith("$new")} | set(live_events) <= kept_ids
    items = await bot.ctx.db.fetch(
        "SELECT kind, event_id, created_at FROM memory_items WHERE workspace_id = $1",
        team.workspace_id,
    )
    old = [i for i in items if i["kind"] == "message" and i["event_id"].startswith("$old")]
    assert old == []
    assert (
        len([i for i in items if i["kind"] == "message" and i["event_id"].startswith("$new")]) == 5
    )
    assert [i["kind"] for i in items].count("fact") == 1  # kept on purpose, kept
    shown = await command(team.alice, team.dm, "!ws settings")
    assert "deleted 30 messages and 30 memories" in shown
    token = bot.config.admin_api.token.get_secret_value()
    url = (
        f"http://127.0.0.1:{bot.config.appservice.port}/_doryo/v1/workspaces/"
        f"{team.workspace_id}/retention"
    )
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        async with http.get(url) as response:
            body = await response.json()
    assert body["retention_days"] == 30 and body["last_run"]["messages_deleted"] == 30
    assert "`retention` = `0`" in await command(
        team.alice, team.dm, "!ws settings retention forever"
    )
