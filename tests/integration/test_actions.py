"""@act end to end on the real Synapse: a member proposes, only the host's (or a delegate's) ✅
runs it, exactly once; ❌ cancels; cards expire; restarts keep cards valid and never run twice;
each built-in tool's effect is real."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from pydantic import BaseModel

from bot.actions.card import ACTION_KEY
from bot.actions.store import Action, parse_code
from bot.app import Doryo
from bot.followups import scheduler
from bot.memory import LocalEmbedder
from bot.tools.registry import Tool, ToolCall, ToolResult
from synapse_dev.server import free_port
from tests.client import JSON, MatrixClient, replies_to
from tests.conftest import Homeserver
from tests.integration.agent_helpers import latest
from tests.integration.workspace_helpers import (
    Team,
    accept,
    command,
    hierarchy,
    new_team,
    start_session,
)
from tests.poll import eventually


async def team_with_member(homeserver: Homeserver, bot: Doryo) -> tuple[Team, str, MatrixClient]:
    team = await new_team(homeserver, bot)
    session = await start_session(team, "Work")
    bob = await homeserver.user("bob")
    await command(team.alice, session, f"!ws invite {bob.user_id}")
    await accept(bob, team.space)
    await accept(bob, session)
    return team, session, bob


async def propose(person: MatrixClient, room: str, text: str) -> JSON:
    """Send an @act; return the card the bot posted in answer."""
    event_id = await person.send_text(room, text)
    found = await person.wait_for(
        room, lambda e: replies_to(e) == event_id and ACTION_KEY in e.get("content", {})
    )
    return found[0]


def status_of(person: MatrixClient, room: str, card: JSON) -> str:
    """The card's status after its latest edit."""
    status = card["content"][ACTION_KEY]["status"]
    for event in person.timeline.get(room, []):
        relates = event.get("content", {}).get("m.relates_to", {})
        if relates.get("rel_type") == "m.replace" and relates.get("event_id") == card["event_id"]:
            status = event["content"]["m.new_content"][ACTION_KEY]["status"]
    return str(status)


async def wait_status(person: MatrixClient, room: str, card: JSON, status: str) -> None:
    async def reached() -> bool:
        await person.sync_once(timeout_ms=300)
        return status_of(person, room, card) == status

    await eventually(reached, timeout=20)


async def react(person: MatrixClient, room: str, target: str, key: str) -> str:
    content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": key}}
    return await person.send(room, "m.reaction", content)


def in_thread(person: MatrixClient, room: str, root: str) -> list[JSON]:
    return [
        e
        for e in person.timeline.get(room, [])
        if e.get("content", {}).get("m.relates_to", {}).get("rel_type") == "m.thread"
        and e["content"]["m.relates_to"].get("event_id") == root
    ]


async def test_member_proposes_and_only_the_host_runs_it(
    homeserver: Homeserver, bot: Doryo
) -> None:
    team, session, bob = await team_with_member(homeserver, bot)
    carol = await homeserver.user("carol")
    await command(team.alice, session, f"!ws invite {carol.user_id}")
    await accept(carol, team.space)
    await accept(carol, session)

    card = await propose(bob, session, '@act create_task title="Ship v1" assignee=' + bob.user_id)
    block = card["content"][ACTION_KEY]
    assert block["status"] == "awaiting_confirm" and block["tool"] == "create_task"
    assert block["args"] == {"title": "Ship v1", "assignee": bob.user_id}
    assert block["requested_by"] == bob.user_id and block["id"].startswith("A")
    body = card["content"]["body"]
    assert "Ship v1" in body
    # Where it stands, first; the host who must act mentioned for real (a pill, notified).
    assert body.startswith(f"⏳ **Waiting for [{team.alice.user_id}](https://matrix.to/#/")
    assert card["content"]["m.mentions"] == {"user_ids": [team.alice.user_id]}
    assert f'href="https://matrix.to/#/{team.alice.user_id}"' in card["content"]["formatted_body"]
    assert "React ✅" in body and "Expires" in body

    # Someone else's ✅ changes nothing; the bot says so once to that person, next to the card
    # (a reply in the timeline, not hidden in a thread).
    await react(carol, session, card["event_id"], "✅")
    await react(carol, session, card["event_id"], "👍")
    told = await bob.wait_for(
        session, lambda e: "changes nothing" in e.get("content", {}).get("body", "")
    )
    assert told[0]["content"]["m.relates_to"] == {"m.in_reply_to": {"event_id": card["event_id"]}}
    assert told[0]["content"]["m.mentions"] == {"user_ids": [carol.user_id]}
    await react(team.alice, session, card["event_id"], "🎉")  # not a decision either
    marker = await bob.send_text(session, "!ping")
    await bob.wait_for_reply(session, marker)
    assert status_of(bob, session, card) == "awaiting_confirm"
    notices = [
        e for e in bob.timeline[session] if "changes nothing" in e["content"].get("body", "")
    ]
    assert len(notices) == 1
    # The bot does not react on its own card: "✅ 1" would read as approved.
    assert not [
        e
        for e in bob.timeline[session]
        if e["type"] == "m.reaction" and e["sender"] == bot.config.bot_user_id
    ]

    # Element's picker sends ✅ with U+FE0F: the same key.
    await react(team.alice, session, card["event_id"], "✅\ufe0f")
    await wait_status(bob, session, card, "done")
    done = latest(bob, session, card)
    assert done["body"].startswith("✅ **Done** — confirmed by")
    assert "React ✅" not in done["body"] and "Expires" not in done["body"]
    assert "**Result:**" in done["body"]
    assert done["m.mentions"] == {"user_ids": [bob.user_id]}  # the requester is told
    result = await bob.wait_for(
        session,
        lambda e: (
            "Task #" in e.get("content", {}).get("body", "")
            and e in in_thread(bob, session, card["event_id"])
        ),
    )
    assert "Ship v1" in result[0]["content"]["body"]
    assert result[0]["content"]["m.mentions"] == {"user_ids": [bob.user_id]}  # the assignee
    tasks = await bot.ctx.tasklist.of_workspace(team.workspace_id)
    assert [(t.title, t.assignee, t.created_by) for t in tasks] == [
        ("Ship v1", bob.user_id, bob.user_id)
    ]
    runs = await bot.ctx.db.fetch(
        "SELECT * FROM tool_runs WHERE workspace_id = $1", team.workspace_id
    )
    assert len(runs) == 1 and runs[0]["confirmed_by"] == team.alice.user_id
    assert runs[0]["outcome"] == "done" and runs[0]["external_ids"] == [f"task:{tasks[0].id}"]

    listing = await command(bob, session, "!tasks")
    assert f"#{tasks[0].id} Ship v1" in listing
    assert "is done" in await command(bob, session, f"!task done {tasks[0].id}")
    assert "no open tasks" in await command(bob, session, "!tasks")


async def test_five_concurrent_confirmations_and_a_redelivery_run_once(
    homeserver: Homeserver, bot: Doryo
) -> None:
    team, session, bob = await team_with_member(homeserver, bot)
    await command(team.alice, session, f"!ws delegate {bob.user_id}")
    card = await propose(bob, session, "@act create_task title=Once")
    keys = [(team.alice, "✅"), (team.alice, "👍"), (team.alice, "✔️"), (bob, "✅"), (bob, "☑️")]
    reactions = await asyncio.gather(*(react(p, session, card["event_id"], k) for p, k in keys))
    await wait_status(bob, session, card, "done")
    await bot.idle(20)

    # The homeserver delivers the first ✅ again, in a transaction of its own.
    event = await bot.ctx.db.fetchval(
        "SELECT event FROM inbox_events WHERE event_id = $1", reactions[0]
    )
    token = bot.config.appservice.hs_token.get_secret_value()
    url = f"http://127.0.0.1:{bot.config.appservice.port}/_matrix/app/v1/transactions/"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        for txn in (f"again-{uuid.uuid4().hex}", "1"):
            async with http.put(url + txn, json={"events": [event]}) as response:
                assert response.status == 200
    await bot.idle(20)
    assert bot.ctx.actions.runs_started == 1
    assert await bot.ctx.db.fetchval("SELECT count(*) FROM tool_runs") == 1
    assert len(await bot.ctx.tasklist.of_workspace(team.workspace_id)) == 1


async def test_cancel_by_reaction_and_by_command(homeserver: Homeserver, bot: Doryo) -> None:
    team, session, bob = await team_with_member(homeserver, bot)
    first = await propose(bob, session, "@act create_task title=Nope")
    await react(bob, session, first["event_id"], "❌")  # the requester may cancel
    await wait_status(bob, session, first, "cancelled")
    await react(team.alice, session, first["event_id"], "✅")  # too late: nothing runs
    second = await propose(bob, session, "@act create_task title=Later")
    code = second["content"][ACTION_KEY]["id"]
    assert "Only the host" in await command(bob, session, f"!confirm {code}")
    assert f"Cancelled {code}" in await command(team.alice, session, f"!cancel {code}")
    assert "not waiting for confirmation" in await command(team.alice, session, f"!confirm {code}")
    await bot.idle(20)
    assert bot.ctx.actions.runs_started == 0
    listing = await command(bob, session, "!actions all")
    assert f"**{code}**" in listing and "cancelled" in listing


async def test_confirm_by_command_and_expiry(homeserver: Homeserver, bot: Doryo) -> None:
    team, session, bob = await team_with_member(homeserver, bot)
    card = await propose(bob, session, "@act create_task title=Typed")
    code = card["content"][ACTION_KEY]["id"]
    assert f"Confirmed {code}" in await command(team.alice, session, f"!confirm {code}")
    await wait_status(bob, session, card, "done")

    stale = await propose(bob, session, "@act create_task title=Stale")
    stale_id = parse_code(stale["content"][ACTION_KEY]["id"])
    await bot.ctx.db.execute(
        "UPDATE actions SET expires_at = now() - interval '1 minute' WHERE id = $1", stale_id
    )
    assert await bot.ctx.actions.expire_due() == 1
    await wait_status(bob, session, stale, "expired")
    await react(team.alice, session, stale["event_id"], "✅")
    await bot.idle(20)
    assert bot.ctx.actions.runs_started == 1


async def test_invalid_arguments_are_explained(homeserver: Homeserver, bot: Doryo) -> None:
    team, session, bob = await team_with_member(homeserver, bot)
    missing = await command(bob, session, "@act create_task")
    assert "`title`: missing" in missing
    extra = await command(bob, session, "@act create_task title=x colour=red")
    assert "`colour`: not an argument" in extra
    bad = await command(bob, session, "@act create_task title=x due=someday")
    assert "`due`" in bad
    assert "is not `key=value`" in await command(bob, session, "@act create_task title")
    assert "quote is not closed" in await command(bob, session, '@act create_task title="x')
    assert "could not turn that into an action" in await command(
        bob, session, "@act make me a sandwich"
    )
    assert await bot.ctx.db.fetchval("SELECT count(*) FROM actions") == 0


async def test_only_the_host_may_propose_when_set(homeserver: Homeserver, bot: Doryo) -> None:
    team, session, bob = await team_with_member(homeserver, bot)
    await command(team.alice, session, "!ws settings act host")
    assert "Only the workspace's host" in await command(bob, session, "@act create_task title=x")
    card = await propose(team.alice, session, "@act create_task title=mine")
    assert card["content"][ACTION_KEY]["requested_by"] == team.alice.user_id


async def test_an_offline_host_gets_one_dm(homeserver: Homeserver, bot: Doryo) -> None:
    team, session, bob = await team_with_member(homeserver, bot)
    # Away: a client that syncs marks its user online, unless it says otherwise.
    team.alice.sync_presence = "offline"
    await team.alice.sync_once(timeout_ms=0)
    await team.alice.set_presence("offline")
    await bot.presence.wait_for(team.alice.user_id, lambda p: not p.is_online, 5)
    card = await propose(bob, session, '@act create_task title="While away"')
    dm = await team.alice.wait_for(
        team.dm,
        lambda e: "only you or a delegate can confirm" in e.get("content", {}).get("body", ""),
    )
    assert card["event_id"] in dm[0]["content"]["body"]
    # Online: no DM for the next card.
    team.alice.sync_presence = "online"
    await team.alice.set_presence("online")
    await bot.presence.wait_for(team.alice.user_id, lambda p: p.is_online, 5)
    await propose(bob, session, '@act create_task title="While here"')
    await bot.idle(20)
    await team.alice.sync_once(timeout_ms=500)
    dms = [
        e
        for e in team.alice.timeline[team.dm]
        if "only you or a delegate" in e.get("content", {}).get("body", "")
    ]
    assert len(dms) == 1


class _Args(BaseModel):
    label: str


async def test_restart_keeps_cards_and_never_runs_twice(
    homeserver: Homeserver, bot: Doryo, bot_config: Any, local_embedder: LocalEmbedder
) -> None:
    team, session, bob = await team_with_member(homeserver, bot)
    awaiting = await propose(bob, session, "@act create_task title=Survives")
    running_idempotent = await propose(bob, session, "@act create_task title=Resumed")
    await bot.stop()

    # A new process on the same database; below, two actions are found as a crash leaves them.
    second = Doryo(bot_config(), embedder=local_embedder)
    await second.start()
    try:
        await asyncio.wait_for(second.connected.wait(), 30)
        runs: list[str] = []

        async def fragile(call: ToolCall, args: _Args) -> ToolResult:
            runs.append(args.label)
            return ToolResult(summary="ran")

        second.ctx.tools.register(Tool("fragile", "1", "Not safe to repeat", _Args, fragile))

        async def fragile_action(label: str) -> Action:
            created, _ = await second.ctx.actions.store.create(
                team.workspace_id,
                session,
                "fragile",
                "1",
                {"label": label},
                bob.user_id,
                datetime.now(UTC) + timedelta(hours=1),
                request_event_id=None,
            )
            return created

        action = await fragile_action("x")
        # Confirmed in this process, before recover() got to run: this process's own run.
        mine = await fragile_action("mine")
        await second.ctx.actions.store.start(mine.id, team.alice.user_id)
        resumed_id = parse_code(running_idempotent["content"][ACTION_KEY]["id"])
        await second.ctx.db.execute(
            "UPDATE actions SET status = 'running', started_at = now() - interval '1 minute' "
            "WHERE id = any($1)",
            [action.id, resumed_id],
        )
        await second.ctx.actions.recover(started_before=second.began)
        await wait_status(bob, session, running_idempotent, "done")
        interrupted = await second.ctx.actions.store.get(action.id)
        assert interrupted is not None and interrupted.status == "error"
        assert "interrupted" in (interrupted.error or "") and runs == []
        still_mine = await second.ctx.actions.store.get(mine.id)
        assert still_mine is not None and still_mine.status == "running"
        await second.ctx.actions.store.finish(mine.id, "done", result=None, error=None)
        titles = [t.title for t in await second.ctx.tasklist.of_workspace(team.workspace_id)]
        assert titles == ["Resumed"]

        # The card from before the restart is still valid.
        await react(team.alice, session, awaiting["event_id"], "✅")
        await wait_status(bob, session, awaiting, "done")
    finally:
        await second.stop()


async def test_builtin_tools_do_their_work(homeserver: Homeserver, bot: Doryo) -> None:
    team, session, bob = await team_with_member(homeserver, bot)

    async def run(text: str) -> JSON:
        card = await propose(bob, session, text)
        await react(team.alice, session, card["event_id"], "✅")
        await wait_status(bob, session, card, "done")
        return card

    # create_followup: the reminder arrives in the room when due, and in a DM for `to`.
    due = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    await run(f'@act create_followup text="Call the supplier" due={due}')
    reminder = await bob.wait_for(
        session,
        lambda e: (
            "Call the supplier" in e.get("content", {}).get("body", "")
            and "Reminder" in e["content"]["body"]
        ),
    )
    assert reminder[0]["sender"] == bot.config.bot_user_id
    await run(f'@act create_followup text="Your turn" due="in 0 minutes" to={team.alice.user_id}')
    await team.alice.wait_for(
        team.dm, lambda e: "Your turn" in e.get("content", {}).get("body", "")
    )

    # create_project: a new session room in the space.
    await run('@act create_project topic="Q3 launch"')
    sessions = await bot.ctx.sessions.of_workspace(team.workspace_id)
    made = [s for s in sessions if s.topic == "Q3 launch"]
    assert len(made) == 1 and made[0].room_id in await hierarchy(team.alice, team.space)

    # send_notification: a DM to a member; not to strangers.
    await run(f'@act send_notification user={team.alice.user_id} text="Budget approved?"')
    await team.alice.wait_for(
        team.dm, lambda e: "Budget approved?" in e.get("content", {}).get("body", "")
    )
    card = await propose(bob, session, "@act send_notification user=@nobody:localhost text=hi")
    await react(team.alice, session, card["event_id"], "✅")
    await wait_status(bob, session, card, "error")

    # summarize_channel: what was said, in the card's thread.
    await bob.send_text(session, "We ship on Friday")
    card = await run("@act summarize_channel hours=1")
    summary = await bob.wait_for(
        session,
        lambda e: (
            "We ship on Friday" in e.get("content", {}).get("body", "")
            and e in in_thread(bob, session, card["event_id"])
        ),
    )
    assert bob.user_id in summary[0]["content"]["body"]


async def test_tools_catalog(homeserver: Homeserver, bot: Doryo) -> None:
    team, session, bob = await team_with_member(homeserver, bot)
    listing = await command(bob, session, "!tools")
    for name in (
        "create_task",
        "create_followup",
        "create_project",
        "summarize_channel",
        "send_notification",
    ):
        assert f"`{name}`" in listing
    detail = await command(bob, session, "!tool create_task")
    assert "`title` (string, required)" in detail and '"required": [' in detail
    assert "There is no tool `nope`" in await command(bob, session, "!tool nope")


async def test_a_reminder_that_cannot_be_posted_stops_and_says_so(
    homeserver: Homeserver, bot: Doryo, monkeypatch: Any
) -> None:
    """It was taken again every two minutes, forever, logging the same error."""
    monkeypatch.setattr(scheduler, "RETRY_AFTER", (0.2, 0.2))
    team = await new_team(homeserver, bot, "Reminders")
    elsewhere = await team.alice.create_room()  # the bot is not in it
    followup = await bot.ctx.followups.add(
        team.workspace_id, elsewhere, "Water the plants", datetime.now(UTC), team.alice.user_id
    )
    bot.ctx.followup_wakeup.set()
    told = await team.alice.wait_for(
        team.dm, lambda e: "Water the plants" in e.get("content", {}).get("body", ""), timeout=30
    )
    assert "after 3 tries" in told[0]["content"]["body"]
    row = await bot.ctx.db.fetchrow(
        "SELECT status, attempts FROM followups WHERE id = $1", followup.id
    )
    assert (row["status"], row["attempts"]) == ("failed", 3)
    assert await bot.ctx.followups.next_due() is None


async def test_the_card_shows_exactly_what_runs(homeserver: Homeserver, bot: Doryo) -> None:
    """Values were cut at 300 characters and rendered as Markdown: a value could fake lines,
    links or mentions on the card the host approves."""
    team, session, bob = await team_with_member(homeserver, bot)
    title = "Ship **now** [approved](https://evil.example) @room <b>x</b> `code`"
    notes = "line one\n- fake: line\n```\nfenced\n```\n" + "x" * 3800
    card = await propose(bob, session, f"@act create_task title='{title}' notes='{notes}'")
    content = card["content"]
    html = content["formatted_body"]
    assert 'href="https://evil' not in html and "<strong>now" not in html and "<b>" not in html
    assert "@room" in content["body"] and content["m.mentions"] == {
        "user_ids": [team.alice.user_id]
    }  # no room ping
    assert notes[-100:] in content["body"]  # in full, not cut
    assert content[ACTION_KEY]["args"] == {"title": title, "notes": notes}
    await react(team.alice, session, card["event_id"], "✅")
    await wait_status(bob, session, card, "done")
    (task,) = await bot.ctx.tasklist.of_workspace(team.workspace_id)
    assert (task.title, task.notes) == (title, notes)  # byte for byte what the card showed


async def test_an_action_killed_between_its_end_and_its_card_is_reported_at_start(
    homeserver: Homeserver, bot: Doryo
) -> None:
    """The status was written before the card was edited and the result posted: killed in
    between, the card stayed `running` forever, with no result in its thread."""
    team, session, bob = await team_with_member(homeserver, bot)
    card = await propose(bob, session, '@act create_task title="Crash course"')
    action_id = parse_code(card["content"][ACTION_KEY]["id"])
    assert action_id is not None
    store = bot.ctx.actions.store
    # Where the kill left it: confirmed, the card saying running, the status written done.
    started = await store.start(action_id, team.alice.user_id)
    assert started is not None
    await bot.ctx.actions._edit_card(started)
    await store.finish(action_id, "done", result={"task": 7}, error=None, summary="Task #7 made")

    await bot.ctx.actions.recover(started_before=datetime.now(UTC) + timedelta(seconds=5))
    await wait_status(bob, session, card, "done")
    posted = await bob.wait_for(
        session,
        lambda e: (
            "Task #7 made" in e.get("content", {}).get("body", "")
            and e in in_thread(bob, session, card["event_id"])
        ),
    )
    assert posted
    assert await bot.ctx.actions.report_pending(datetime.now(UTC)) == 0  # once


async def test_a_run_of_another_live_process_is_never_recovered_one_of_a_dead_one_once(
    homeserver: Homeserver, bot: Doryo, bot_config: Any, local_embedder: LocalEmbedder
) -> None:
    """Several processes on one database: recovery used to take every action running since
    before its own start, so a second worker starting (or taking the jobs over) would mark
    interrupted — or run again — an action another live worker was running."""
    team, session, bob = await team_with_member(homeserver, bot)
    other = Doryo(bot_config(), embedder=local_embedder, role="worker", port=free_port())
    await other.start()
    stopped = False
    try:
        store = bot.ctx.actions.store
        created, _ = await store.create(
            team.workspace_id,
            session,
            "fragile",
            "1",
            {"label": "elsewhere"},
            bob.user_id,
            datetime.now(UTC) + timedelta(hours=1),
            request_event_id=None,
        )
        assert other.leases is not None and bot.leases is not None
        started = await store.start(created.id, team.alice.user_id, other.leases.key)
        assert started is not None
        # Older than this process: only its runner's liveness tells it apart from a crash's.
        await bot.ctx.db.execute(
            "UPDATE actions SET started_at = now() - interval '1 hour' WHERE id = $1", created.id
        )
        await bot.ctx.actions.recover(started_before=datetime.now(UTC))
        still = await store.get(created.id)
        assert still is not None and still.status == "running"

        await other.stop()  # its lease connection closes: to PostgreSQL, it died
        stopped = True
        await bot.ctx.actions.recover(started_before=datetime.now(UTC))
        await bot.ctx.actions.recover(started_before=datetime.now(UTC))  # once, not twice
        ended = await store.get(created.id)
        assert ended is not None and ended.status == "error"
        assert "interrupted" in (ended.error or "")
        runs = await bot.ctx.db.fetchval(
            "SELECT count(*) FROM tool_runs WHERE action_id = $1", created.id
        )
        assert runs == 1  # one record: the interruption
    finally:
        if not stopped:
            await other.stop()


async def test_a_reminder_added_in_a_worker_without_the_jobs_is_posted_at_once(
    homeserver: Homeserver, bot: Doryo, bot_config: Any, local_embedder: LocalEmbedder
) -> None:
    """The reminders' loop runs in the process holding the jobs and sleeps up to a minute: a
    reminder added in another process used to wait for that minute."""
    team, session, _ = await team_with_member(homeserver, bot)
    assert bot.leases is not None and bot.leases.holds_jobs
    other = Doryo(bot_config(), embedder=local_embedder, role="worker", port=free_port())
    await other.start()
    try:
        await asyncio.wait_for(other.connected.wait(), 30)
        await asyncio.sleep(1)  # the jobs' reminders loop is asleep, nothing being due
        await other.ctx.followups.add(
            team.workspace_id,
            session,
            "Forwarded across processes",
            datetime.now(UTC),
            team.alice.user_id,
        )
        other.ctx.followup_wakeup.set()  # as create_followup does
        posted = await team.alice.wait_for(
            session,
            lambda e: "Forwarded across processes" in e.get("content", {}).get("body", ""),
            timeout=15,
        )
        assert posted[0]["sender"] == bot.config.bot_user_id
    finally:
        await other.stop()
