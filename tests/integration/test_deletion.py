"""`!ws delete`: only the host's ✅ on the card deletes a workspace; every row of it goes, no row
of another workspace does; the bot says goodbye and leaves the rooms, which stay; a cancel, an
expiry and the text fallback; a deletion cut short after its transaction is finished at the
next start."""

from __future__ import annotations

import re
from typing import Any

import pytest

from appservice.errors import HomeserverUnavailable
from bot.app import Doryo
from bot.data import deletion
from bot.data.deletion import DELETION_KEY, KEPT
from tests.client import JSON, MatrixClient, replies_to
from tests.conftest import Homeserver
from tests.fakes.llm_script import Answer
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.agent_helpers import final_answer, latest
from tests.integration.test_actions import propose, react, team_with_member, wait_status
from tests.integration.workspace_helpers import Team, command, new_team, start_session
from tests.poll import eventually


async def ask_delete(person: MatrixClient, room: str, bot: Doryo) -> JSON:
    """`!ws delete`: the card, once the bot has noted it (it is seen a moment before)."""
    event_id = await person.send_text(room, "!ws delete")
    found = await person.wait_for(
        room, lambda e: replies_to(e) == event_id and DELETION_KEY in e.get("content", {})
    )
    card = found[0]

    async def noted() -> bool:
        sql = "SELECT 1 FROM workspace_deletions WHERE card_event_id = $1"
        return await bot.ctx.db.fetchval(sql, card["event_id"]) is not None

    await eventually(noted, timeout=10)
    return card


async def card_status(person: MatrixClient, room: str, card: JSON, status: str) -> JSON:
    async def reached() -> JSON | None:
        await person.sync_once(timeout_ms=300)
        content = latest(person, room, card)
        return content if content[DELETION_KEY]["status"] == status else None

    return await eventually(reached, timeout=30)


async def rows_of(bot: Doryo, workspace_id: str, rooms: list[str]) -> dict[str, int]:
    """Per table of the schema: the rows that name the workspace or one of its rooms."""
    columns = await bot.ctx.db.fetch(
        """
        SELECT c.table_name, c.column_name FROM information_schema.columns c
        JOIN information_schema.tables t USING (table_schema, table_name)
        WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
          AND (c.column_name IN ('workspace_id', 'room_id', 'space_id')
               OR (c.table_name = 'workspaces' AND c.column_name = 'id'))
        """
    )
    found: dict[str, int] = {}
    for row in columns:
        table, column = row["table_name"], row["column_name"]
        n = await bot.ctx.db.fetchval(
            f"SELECT count(*) FROM {table} WHERE {column} = $1 OR {column} = ANY($2::text[])",
            workspace_id,
            rooms,
        )
        found[f"{table}.{column}"] = found.get(f"{table}.{column}", 0) + n
    return found


async def busy_team(
    homeserver: Homeserver, bot: Doryo, model_server: FakeOpenAI
) -> tuple[Team, str, MatrixClient]:
    """A workspace with something in every kind of table: history, memory, an answered
    question (usage), a confirmed action (audit log), a task, a reminder, an invite code."""
    team, session, bob = await team_with_member(homeserver, bot)
    await bob.send_text(session, "The Falcon budget is 40k.")
    await command(bob, session, "!remember Falcon ships in March")
    model_server.script(Answer("In March."))
    question = await bob.send_text(session, "@ask when does Falcon ship?")
    await final_answer(bob, session, question)
    card = await propose(bob, session, '@act create_task title="Falcon errand"')
    await react(team.alice, session, card["event_id"], "✅")
    await wait_status(bob, session, card, "done")
    followup = await propose(bob, session, '@act create_followup text="Check Falcon" due=1d')
    await react(team.alice, session, followup["event_id"], "✅")
    await wait_status(bob, session, followup, "done")
    await command(team.alice, team.dm, "!ws invite")
    await bot.ctx.llm.flush()
    return team, session, bob


async def test_only_the_hosts_confirmation_deletes_the_workspace_and_nothing_else(
    homeserver: Homeserver, bot: Doryo, model_server: FakeOpenAI
) -> None:
    team, session, bob = await busy_team(homeserver, bot, model_server)
    await command(team.alice, team.dm, f"!ws delegate {bob.user_id}")
    other = await new_team(homeserver, bot, "Second")
    other_room = await start_session(other, "Elsewhere")
    await other.alice.send_text(other_room, "The Second team meets on Fridays.")
    await command(other.alice, other_room, "!remember Second's budget is 10k")
    rooms = [team.space, session]
    others = [other.space, other_room]
    await bot.idle(30)
    assert bot.ctx.memory is not None
    await bot.ctx.memory.indexer.flush(60)  # memory is written after the event is handled
    before = await rows_of(bot, team.workspace_id, rooms)
    assert before["messages.room_id"] >= 3 and before["memory_items.workspace_id"] >= 2
    assert before["llm_usage.workspace_id"] >= 1 and before["tool_runs.workspace_id"] == 2
    kept_before = await rows_of(bot, other.workspace_id, others)

    # Nobody but the host asks; a second request points at the first card.
    assert "Only the" in await command(bob, session, "!ws delete")
    card = await ask_delete(team.alice, session, bot)
    block = card["content"][DELETION_KEY]
    assert block == {
        "workspace": team.workspace_id,
        "status": "awaiting_confirm",
        "requested_by": team.alice.user_id,
    }
    body = card["content"]["body"]
    assert "Delete the workspace Rocket?" in body and "stay with their people" in body
    assert re.search(r"\b\d+ messages, \d+ memories, 1 session\(s\), 2 actions with", body), body
    assert "Letta" not in body  # nothing counted zero is named (no Letta agent here)
    assert team.alice.user_id in card["content"]["m.mentions"]["user_ids"]
    again = await command(team.alice, team.dm, "!ws delete")
    assert "already waiting" in again and card["event_id"] in again

    # A delegate's ✅ (or 👍) deletes nothing; they are told once why.
    await react(bob, session, card["event_id"], "✅")
    await react(bob, session, card["event_id"], "👍")
    told = await bob.wait_for(
        session, lambda e: "Only the host" in e.get("content", {}).get("body", "")
    )
    await bot.idle(30)
    assert latest(bob, session, card)[DELETION_KEY]["status"] == "awaiting_confirm"
    assert await bot.ctx.workspaces.get(team.workspace_id) is not None
    assert len(told) == 1 and bob.user_id in told[0]["content"]["m.mentions"]["user_ids"]

    # The host's ✅: every row of the workspace goes, of the other none.
    await react(team.alice, session, card["event_id"], "✅")
    done = await card_status(team.alice, session, card, "done")
    assert "Deleted" in done["body"] and "left 2 room(s)" in done["body"]
    assert done[DELETION_KEY]["deleted"]["messages"] >= before["messages.room_id"]
    await team.alice.wait_for(
        session, lambda e: "was deleted by its host" in e.get("content", {}).get("body", "")
    )
    for room in rooms:
        await team.alice.wait_for(
            room,
            lambda e: (
                e["type"] == "m.room.member"
                and e.get("state_key") == bot.config.bot_user_id
                and e["content"].get("membership") == "leave"
            ),
        )
    await bot.idle(30)
    after = await rows_of(bot, team.workspace_id, rooms)
    # What reached the bot from the rooms after the deletion (its own goodbye and leave) is
    # journaled like any room's events, and pruned with them after a week.
    after["inbox_events.room_id"] = await bot.ctx.db.fetchval(
        "SELECT count(*) FROM inbox_events i JOIN workspace_deletions d "
        "ON d.workspace_id = $1 AND i.received_at <= d.decided_at "
        "WHERE i.room_id = ANY($2::text[])",
        team.workspace_id,
        rooms,
    )
    left = {k: n for k, n in after.items() if n and k.split(".")[0] not in KEPT}
    assert left == {}, "rows of the deleted workspace are left in these tables"
    assert after["workspace_deletions.workspace_id"] == 1
    assert await rows_of(bot, other.workspace_id, others) == kept_before
    # The rooms stay with their people.
    members = await team.alice.request("GET", f"/v3/rooms/{session}/joined_members")
    assert set(members["joined"]) == {team.alice.user_id, bob.user_id}


async def test_cancel_expiry_and_the_text_fallback(homeserver: Homeserver, bot: Doryo) -> None:
    team, session, bob = await team_with_member(homeserver, bot)

    card = await ask_delete(team.alice, session, bot)
    await react(team.alice, session, card["event_id"], "❌")
    await card_status(team.alice, session, card, "cancelled")
    assert await bot.ctx.workspaces.get(team.workspace_id) is not None

    # An hour later the card has expired: a ✅ then deletes nothing.
    card = await ask_delete(team.alice, session, bot)
    await bot.ctx.db.execute(
        "UPDATE workspace_deletions SET expires_at = now() - interval '1 second' "
        "WHERE card_event_id = $1",
        card["event_id"],
    )
    await deletion.expire_due(bot.ctx)  # (or the maintenance loop, first)
    await card_status(team.alice, session, card, "expired")
    await react(team.alice, session, card["event_id"], "✅")
    await bot.idle(30)
    assert await bot.ctx.workspaces.get(team.workspace_id) is not None
    assert "Nothing is waiting" in await command(team.alice, team.dm, "!ws delete confirm")

    # Typed instead of tapped, from the DM: the card in the session says it is done.
    card = await ask_delete(team.alice, session, bot)
    assert "Only the" in await command(bob, session, "!ws delete confirm")
    assert "Deleting **Rocket**" in await command(team.alice, team.dm, "!ws delete confirm")
    await card_status(team.alice, session, card, "done")
    assert await bot.ctx.workspaces.get(team.workspace_id) is None


async def test_a_deletion_cut_short_after_its_transaction_is_finished_at_the_next_start(
    homeserver: Homeserver, bot: Doryo
) -> None:
    team, session, bob = await team_with_member(homeserver, bot)
    # A request whose card was never posted (killed between the two): it gives way.
    await bot.ctx.db.execute(
        "INSERT INTO workspace_deletions (workspace_id, room_id, request_event_id, "
        "requested_by, expires_at) VALUES ($1, $2, '$lost', $3, now() + interval '1 hour')",
        team.workspace_id,
        session,
        team.alice.user_id,
    )
    card = await ask_delete(team.alice, session, bot)
    # As if the process were killed right after the deleting transaction committed: the data
    # is gone, the card still waits, the bot is still in the rooms.
    row: Any = await bot.ctx.db.fetchrow(
        "UPDATE workspace_deletions SET status = 'running', decided_by = $2, "
        "decided_at = now() - interval '1 minute' WHERE card_event_id = $1 RETURNING id",
        card["event_id"],
        team.alice.user_id,
    )
    async with bot.ctx.db.acquire() as conn:
        await deletion.delete_data(conn, row["id"], team.workspace_id)
        await deletion.delete_data(conn, row["id"], team.workspace_id)  # twice: no harm
    assert await bot.ctx.workspaces.get(team.workspace_id) is None

    await deletion.recover(bot.ctx, decided_before=await bot.ctx.db.fetchval("SELECT now()"))
    done = await card_status(team.alice, session, card, "done")
    assert "left 2 room(s)" in done["body"]
    await bob.wait_for(
        session,
        lambda e: (
            e["type"] == "m.room.member"
            and e.get("state_key") == bot.config.bot_user_id
            and e["content"].get("membership") == "leave"
        ),
    )


async def test_rooms_left_later_when_the_homeserver_was_away_at_the_leave(
    homeserver: Homeserver, bot: Doryo, monkeypatch: pytest.MonkeyPatch
) -> None:
    team, session, bob = await team_with_member(homeserver, bot)
    card = await ask_delete(team.alice, session, bot)

    async def away(room_id: str) -> None:
        raise HomeserverUnavailable("homeserver away (test)")

    monkeypatch.setattr(bot.ctx.matrix, "leave", away)
    assert "Deleting" in await command(team.alice, team.dm, "!ws delete confirm")
    await card_status(team.alice, session, card, "done")  # the data is gone, the card says so

    async def tried() -> bool:
        status = await bot.ctx.db.fetchval(
            "SELECT status FROM workspace_deletions WHERE card_event_id = $1", card["event_id"]
        )
        return await bot.ctx.workspaces.get(team.workspace_id) is None and status == "running"

    await eventually(tried, timeout=20)  # not done: the bot is still in the rooms
    members = await team.alice.request("GET", f"/v3/rooms/{session}/joined_members")
    assert bot.config.bot_user_id in members["joined"]

    monkeypatch.undo()  # the homeserver is back: maintenance finishes it
    await deletion.recover(bot.ctx, decided_before=await bot.ctx.db.fetchval("SELECT now()"))
    status = await bot.ctx.db.fetchval(
        "SELECT status FROM workspace_deletions WHERE card_event_id = $1", card["event_id"]
    )
    assert status == "done"
    members = await team.alice.request("GET", f"/v3/rooms/{session}/joined_members")
    assert bot.config.bot_user_id not in members["joined"]
    await team.alice.sync_once(timeout_ms=500)
    farewells = [
        e
        for e in team.alice.timeline.get(session, [])
        if "was deleted by its host" in e.get("content", {}).get("body", "")
    ]
    assert len(farewells) == 1  # said once, though tried twice
