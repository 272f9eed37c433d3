"""Nothing lost, nothing done twice: Synapse restarting in the middle of a stream of messages,
and the bot killed (SIGKILL) in the middle of one."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from mautrix.api import Method

from appservice.errors import HomeserverUnavailable
from appservice.transactions import Transaction
from bot import app as app_module
from bot import missed_events
from bot.app import Doryo
from bot.core.config import write_config
from bot.core.errors import DatabaseError
from synapse_dev.server import free_port
from tests.client import MatrixClient, replies_to
from tests.conftest import Homeserver, make_config, restartable_homeserver, running_bot
from tests.poll import eventually

MESSAGES = 30


homeserver = pytest.fixture(scope="module", name="homeserver")(restartable_homeserver)


async def room_with_bot(homeserver: Homeserver, bot_id: str) -> tuple[MatrixClient, str]:
    alice = await homeserver.user("alice")
    room = await alice.create_room(invite=[bot_id])
    await alice.wait_for(
        room,
        lambda e: e["type"] == "m.room.message" and e["sender"] == bot_id,
        timeout=30,
    )  # the welcome: the bot has joined and answers
    return alice, room


def assert_one_reply_each(alice: MatrixClient, room: str, sent: list[str], bot_id: str) -> None:
    replies = Counter(
        replies_to(e) for e in alice.timeline[room] if e["sender"] == bot_id and replies_to(e)
    )
    assert {event_id: replies[event_id] for event_id in sent} == dict.fromkeys(sent, 1)


async def wait_for_replies(
    alice: MatrixClient, room: str, sent: list[str], timeout: float, bot_db: Any
) -> None:
    """Until every message has an answer, and the bot's inbox has none of them left to handle
    (`bot_db`: its database; a duplicate answer, if any, has been sent by then).

    On a timeout, says which messages have no answer and what the bot's inbox holds of them.
    """

    def unanswered() -> set[str]:
        return set(sent) - {replies_to(e) for e in alice.timeline.get(room, [])}

    try:
        async with asyncio.timeout(timeout):
            while unanswered():
                await alice.sync_once(timeout_ms=500)
    except TimeoutError:
        missing = sorted(unanswered())
        inbox = await bot_db.fetch(
            "SELECT event_id, state, attempts, error FROM inbox_events"
            " WHERE event_id = any($1::text[])",
            missing,
        )
        raise AssertionError(
            f"no answer to {len(missing)} of {len(sent)} messages: {missing}; inbox: {inbox}"
        ) from None

    async def handled() -> bool:
        pending = await bot_db.fetchval(
            "SELECT count(*) FROM inbox_events WHERE event_id = any($1::text[])"
            " AND state = 'pending'",
            sent,
        )
        return bool(pending == 0)

    await eventually(handled, timeout=timeout)
    await alice.sync_once(timeout_ms=0)


async def handled_once(bot_db: Any, sent: list[str]) -> None:
    rows = await bot_db.fetch(
        "SELECT event_id, state FROM inbox_events WHERE event_id = any($1::text[])", sent
    )
    assert sorted(r["event_id"] for r in rows) == sorted(sent)
    assert {r["state"] for r in rows} == {"done"}


async def test_synapse_restarted_mid_stream(homeserver: Homeserver, bot: Doryo) -> None:
    bot_id = bot.config.bot_user_id
    alice, room = await room_with_bot(homeserver, bot_id)
    sent: list[str] = []
    a_third_sent = asyncio.Event()

    async def stream() -> None:
        for n in range(MESSAGES):
            sent.append(await alice.send_text(room, f"!ping {n}", retry_for=60))
            if len(sent) == MESSAGES // 3:
                a_third_sent.set()
            await asyncio.sleep(0.05)

    sender = asyncio.create_task(stream())
    await a_third_sent.wait()
    await homeserver.synapse.restart()
    await sender
    await wait_for_replies(alice, room, sent, timeout=90, bot_db=bot.ctx.db)
    await bot.idle(30)
    assert_one_reply_each(alice, room, sent, bot_id)
    await handled_once(bot.ctx.db, sent)


async def test_the_homeserver_is_pinged_again_after_the_start(bot: Doryo) -> None:
    """After a restart Synapse may still back off from the appservice once the first ping's
    retry has failed too (seen in CI: the ✅ after a restart waited 32 s; on a connection to
    the process before, we think): a few more pings follow the first (bot.app.PING_AGAIN),
    each a retry at once."""

    async def pinged_again() -> bool:
        return bot.receiver.pings_received >= 1 + 3  # the first, then at +1, +3 and +7 s

    await eventually(pinged_again, timeout=20)


async def test_event_never_pushed_is_caught_up(
    homeserver: Homeserver, bot: Doryo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What Synapse does when stopped between writing a transaction and sending it: the event is
    in the room, the bot never gets it. Here the bot's inbox drops it instead, answering 200."""
    bot_id = bot.config.bot_user_id
    alice, room = await room_with_bot(homeserver, bot_id)
    store_transaction = bot.inbox.store_transaction

    async def losing_one(txn: Transaction) -> bool:
        kept = [e for e in txn.events if e.get("content", {}).get("body") != "!ping lost"]
        return await store_transaction(dataclasses.replace(txn, events=kept))

    monkeypatch.setattr(bot.inbox, "store_transaction", losing_one)
    lost = await alice.send_text(room, "!ping lost")
    after = await alice.send_text(room, "!ping after")
    await wait_for_replies(alice, room, [after], timeout=30, bot_db=bot.ctx.db)
    assert await bot.inbox.known([lost]) == set()

    assert await bot.missed.recent_rooms(missed_events.ROUTINE) == 1
    await wait_for_replies(alice, room, [lost, after], timeout=30, bot_db=bot.ctx.db)
    assert await bot.missed.recent_rooms(missed_events.ROUTINE) == 0  # found once
    assert_one_reply_each(alice, room, [lost, after], bot_id)


async def test_the_routine_sweep_leaves_an_event_still_on_its_way(
    homeserver: Homeserver, bot: Doryo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event is in the room's timeline before its transaction reaches the bot: the sweep
    must not take it for one the homeserver never pushed (a false alarm in the log)."""
    bot_id = bot.config.bot_user_id
    alice, room = await room_with_bot(homeserver, bot_id)
    store_transaction = bot.inbox.store_transaction
    held = asyncio.Event()
    release = asyncio.Event()

    async def slow(txn: Transaction) -> bool:
        if any(e.get("content", {}).get("body") == "!ping in flight" for e in txn.events):
            held.set()
            await release.wait()
        return await store_transaction(txn)

    monkeypatch.setattr(bot.inbox, "store_transaction", slow)
    sent = await alice.send_text(room, "!ping in flight")
    await asyncio.wait_for(held.wait(), 30)
    found = await bot.missed.recent_rooms(
        missed_events.ROUTINE, settled=missed_events.ROUTINE_SETTLED
    )
    assert found == 0 and await bot.inbox.known([sent]) == set()
    release.set()
    await wait_for_replies(alice, room, [sent], timeout=30, bot_db=bot.ctx.db)
    assert_one_reply_each(alice, room, [sent], bot_id)


async def unpushed_event(
    homeserver: Homeserver, bot: Doryo, monkeypatch: pytest.MonkeyPatch
) -> tuple[MatrixClient, str, list[str]]:
    """A room with a message Synapse never pushed (as when stopped between writing and sending
    its transaction) and one after it, answered; the routine sweep that would find the first
    switched off. Returns the person, the room, and both messages."""
    alice, room = await room_with_bot(homeserver, bot.config.bot_user_id)
    store_transaction = bot.inbox.store_transaction

    async def losing_one(txn: Transaction) -> bool:
        kept = [e for e in txn.events if e.get("content", {}).get("body") != "!ping unpushed"]
        return await store_transaction(dataclasses.replace(txn, events=kept))

    recent_rooms = bot.missed.recent_rooms

    async def no_routine_sweep(window: timedelta, **settled: timedelta) -> int:
        return 0 if window == missed_events.ROUTINE else await recent_rooms(window, **settled)

    monkeypatch.setattr(bot.inbox, "store_transaction", losing_one)
    monkeypatch.setattr(bot.missed, "recent_rooms", no_routine_sweep)
    lost = await alice.send_text(room, "!ping unpushed")
    after = await alice.send_text(room, "!ping after it")
    await wait_for_replies(alice, room, [after], timeout=30, bot_db=bot.ctx.db)
    assert await bot.inbox.known([lost]) == set()
    return alice, room, [lost, after]


async def find_homeserver_unreachable(doryo: Doryo) -> None:
    """One call that timed out: what a process sees of a restart that its probe missed."""
    with pytest.raises(HomeserverUnavailable, match="timed out"):
        await doryo.ctx.matrix.request(
            Method.GET, "/_matrix/client/v3/account/whoami", timeout=1e-6
        )


async def test_an_outage_between_two_probes_is_caught_up_at_the_next(
    homeserver: Homeserver, bot: Doryo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A homeserver restart can fall between two probes, which then always find it up. A call
    that found it unreachable meanwhile counts as the outage: the events it never pushed are
    read back at the next probe, not at the routine sweep (here never: it is switched off)."""
    alice, room, sent = await unpushed_event(homeserver, bot, monkeypatch)
    await find_homeserver_unreachable(bot)
    await wait_for_replies(alice, room, sent, timeout=30, bot_db=bot.ctx.db)
    assert_one_reply_each(alice, room, sent, bot.config.bot_user_id)


async def test_an_outage_seen_by_a_worker_without_the_jobs_is_caught_up(
    homeserver: Homeserver,
    bot: Doryo,
    bot_config: Any,
    local_embedder: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The catch-up runs in the process holding the run-once jobs; a worker that found the
    homeserver unreachable tells it (its look announces the outage like a queued job)."""
    alice, room, sent = await unpushed_event(homeserver, bot, monkeypatch)
    assert bot.leases is not None and bot.leases.holds_jobs
    other = Doryo(bot_config(), embedder=local_embedder, role="worker", port=free_port())
    await other.start()
    try:
        await asyncio.wait_for(other.connected.wait(), 30)
        await find_homeserver_unreachable(other)
        assert not bot.ctx.matrix.unreachable.is_set()
        await wait_for_replies(alice, room, sent, timeout=30, bot_db=bot.ctx.db)
        assert_one_reply_each(alice, room, sent, bot.config.bot_user_id)
    finally:
        await other.stop()


async def start_bot_process(config_path: Path, log_path: Path) -> asyncio.subprocess.Process:
    with log_path.open("ab") as log_file:  # the child keeps its own copy of the descriptor
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "run",
            "-c",
            str(config_path),
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
        )


async def wait_ready(port: int, timeout: float = 90) -> None:
    """Until the bot answers /ready (a start takes seconds alone, far longer on a loaded CI)."""
    async with aiohttp.ClientSession() as session, asyncio.timeout(timeout):
        while True:
            try:
                async with session.get(f"http://127.0.0.1:{port}/ready") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)


async def wait_inbox(
    database_url: str, room: str, *, done_at_least: int, pending_at_least: int
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        async with asyncio.timeout(30):
            while True:
                counts = dict(
                    await conn.fetch(
                        "SELECT state, count(*) FROM inbox_events WHERE room_id = $1 "
                        "GROUP BY state",
                        room,
                    )
                )
                if (
                    counts.get("done", 0) >= done_at_least
                    and counts.get("pending", 0) >= pending_at_least
                ):
                    return
                await asyncio.sleep(0.005)
    finally:
        await conn.close()


def children(pid: int) -> set[int]:
    return {
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    }


async def all_gone(pids: set[int], timeout: float = 10) -> None:
    def running(pid: int) -> bool:
        try:
            return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return False

    left = pids
    for _ in range(int(timeout / 0.2)):
        left = {pid for pid in left if running(pid)}
        if not left:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"processes still running: {left}")


async def test_bot_killed_mid_stream_resumes(
    homeserver: Homeserver, database_url: str, redis_url: str, tmp_path: Path
) -> None:
    config = make_config(homeserver, database_url, redis_url, tmp_path)
    config_path = tmp_path / "config.yaml"
    write_config(
        config_path,
        {
            "homeserver": {"address": homeserver.url, "domain": "localhost"},
            "appservice": {
                "port": homeserver.as_port,
                "as_token": homeserver.as_token,
                "hs_token": homeserver.hs_token,
            },
            "database": {"url": database_url},
            "redis": {"url": redis_url, "key_prefix": config.redis.key_prefix},
            "data_dir": str(tmp_path),
        },
    )
    log_path = tmp_path / "bot.core.log"
    process = await start_bot_process(config_path, log_path)
    try:
        await wait_ready(homeserver.as_port)
        alice, room = await room_with_bot(homeserver, config.bot_user_id)
        semaphore = asyncio.Semaphore(8)

        async def ping(n: int) -> str:
            async with semaphore:
                return await alice.send_text(room, f"!ping {n}")

        sending = asyncio.gather(*(ping(n) for n in range(MESSAGES * 2)))
        # Kill it without warning while it is in the middle: some handled, some still pending.
        await wait_inbox(database_url, room, done_at_least=5, pending_at_least=1)
        workers = children(process.pid)  # the embedding model's, started with the bot
        assert workers
        os.kill(process.pid, signal.SIGKILL)
        await process.wait()
        await all_gone(workers)  # they do not wait for work forever
        sent = await sending
        process = await start_bot_process(config_path, log_path)
        await wait_ready(homeserver.as_port)
        db = await asyncpg.connect(database_url)
        try:
            await wait_for_replies(alice, room, sent, timeout=90, bot_db=db)
        finally:
            await db.close()
        assert_one_reply_each(alice, room, sent, config.bot_user_id)
        workers = children(process.pid)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 30)
    assert process.returncode == 0, log_path.read_text()[-3000:]
    await all_gone(workers)
    assert log_path.read_text().count("resuming 1 rooms with events left from the last run") == 1
    conn = await asyncpg.connect(database_url)
    try:
        await handled_once(conn, sent)
    finally:
        await conn.close()


@pytest.fixture
async def embedded_bot(
    homeserver: Homeserver,
    redis_url: str,
    tmp_path: Path,
    local_embedder: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Doryo]:
    """A bot on `database.url: embedded`, its own PostgreSQL under tmp_path, checked often."""
    monkeypatch.setattr(app_module, "EMBEDDED_PG_CHECK", 0.5)
    config = make_config(homeserver, "embedded", redis_url, tmp_path)
    async with running_bot(config, local_embedder) as doryo:
        yield doryo


async def test_a_killed_embedded_postgres_is_started_again(
    homeserver: Homeserver, embedded_bot: Doryo
) -> None:
    bot = embedded_bot
    alice, room = await room_with_bot(homeserver, bot.config.bot_user_id)
    server = bot._embedded_pg
    killed = server.get_pid()
    os.kill(killed, signal.SIGKILL)
    # Said while it is dead: answered once it is back, once each.
    sent = [await alice.send_text(room, f"!ping {n}") for n in range(3)]
    await wait_for_replies(alice, room, sent, timeout=90, bot_db=bot.ctx.db)
    assert server.get_pid() != killed
    assert not bot.gave_up.is_set()
    await bot.idle(30)
    assert_one_reply_each(alice, room, sent, bot.config.bot_user_id)
    await handled_once(bot.ctx.db, sent)


async def test_an_embedded_postgres_that_cannot_start_again_ends_the_process(
    embedded_bot: Doryo,
) -> None:
    bot = embedded_bot
    server = bot._embedded_pg
    conf = server.pgdata / "postgresql.conf"
    good = conf.read_text()
    conf.write_text(good + "\nthis is not a setting\n")
    try:
        os.kill(server.get_pid(), signal.SIGKILL)
        await asyncio.wait_for(bot.gave_up.wait(), timeout=60)
    finally:
        conf.write_text(good)
    assert isinstance(bot.failure, DatabaseError)
    assert "did not start again" in str(bot.failure)


class _BrokenState:
    """The lease connection as asyncpg leaves it when PostgreSQL dies mid-query: every call
    raises InternalClientError ("another operation is in progress") and it never closes."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def is_closed(self) -> bool:
        return False

    def terminate(self) -> None:
        self._conn.terminate()

    async def fetchval(self, *_: Any) -> Any:
        raise asyncpg.InternalClientError("cannot switch to state 11; another operation")

    fetch = fetchval


async def test_a_lease_connection_whose_state_broke_is_replaced(
    homeserver: Homeserver, bot: Doryo
) -> None:
    """Seen in a run where the embedded PostgreSQL was killed: the lease connection's error was
    not one it expected, so it was kept — every room's lease failed from then on, and the
    room's events waited forever."""
    alice, room = await room_with_bot(homeserver, bot.config.bot_user_id)
    leases = bot.leases
    assert leases is not None
    broken = _BrokenState(leases._conn)
    leases._conn = broken  # type: ignore[assignment]
    sent = [await alice.send_text(room, f"!ping {n}") for n in range(3)]
    await wait_for_replies(alice, room, sent, timeout=30, bot_db=bot.ctx.db)
    assert leases._conn is not broken and leases.held.is_set()
    assert_one_reply_each(alice, room, sent, bot.config.bot_user_id)
