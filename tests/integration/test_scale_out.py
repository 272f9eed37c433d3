"""Doryo as several processes on one PostgreSQL and Redis: a receiver, an embedder and two
workers, each a real `python -m bot run --role …` process, against a real Synapse. Only the
embedder holds the local embedding model; the receiver and the workers ask it. Workers are
killed with SIGKILL in the middle of their work (an answer, a stream, an action's run), and
PostgreSQL, Redis and Synapse go away under them; each test asserts that nothing is lost, nothing
is answered or run twice, and prints how long the recovery took."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from synapse_dev.server import free_port
from tests.client import JSON, MatrixClient
from tests.conftest import Homeserver, fresh_database, restartable_homeserver
from tests.fakes.composio_server import Execution, FakeComposio
from tests.fakes.llm_script import Answer, Hang
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.agent_helpers import ANSWER_KEY, final_answer
from tests.integration.test_actions import in_thread, propose, react, wait_status
from tests.integration.test_composio import TEMPLATE_TOOL
from tests.integration.test_resilience import (
    assert_one_reply_each,
    children,
    handled_once,
    room_with_bot,
    wait_for_replies,
)
from tests.integration.workspace_helpers import command
from tests.poll import eventually
from tests.processes import Deployment, deployment


class RedisServer:
    """A Redis of this module's own, on a fixed port, that a test may stop and start again."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(self.workdir),
            stdout=asyncio.subprocess.DEVNULL, stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        client = Redis.from_url(self.url)
        try:
            async with asyncio.timeout(10):
                while True:
                    try:
                        await client.ping()
                        return
                    except RedisError:
                        await asyncio.sleep(0.025)
        finally:
            await client.aclose()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


homeserver = pytest.fixture(scope="module", name="homeserver")(restartable_homeserver)


@pytest.fixture(scope="module")
async def composio() -> AsyncIterator[FakeComposio]:
    async with FakeComposio() as fake:
        yield fake


@pytest.fixture(scope="module")
async def redis_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
async def model() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(default=Answer("Done by a worker.")) as fake:
        yield fake


@pytest.fixture(scope="module")
async def deployed(
    homeserver: Homeserver,
    postgres: Any,
    redis_server: RedisServer,
    composio: FakeComposio,
    model: FakeOpenAI,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Deployment]:
    """One deployment for the module: starting it (the embedder loads the model) costs most of
    a minute, so the tests share it, each in rooms of its own."""
    embedder_port = free_port()
    async with fresh_database(postgres) as database_url:
        found = deployment(
            tmp_path_factory.mktemp("deployment"),
            homeserver=homeserver,
            database_url=database_url,
            redis_url=redis_server.url,
            model_url=model.base_url,
            embedder_port=embedder_port,
            llm={
                "timeouts": {"total": 30, "first_token": 20, "connect": 2},
                "retries": {"attempts": 1, "backoff": 0.01, "max_backoff": 0.05},
            },
            embeddings={"timeout": 10},
            composio=composio.config(github="ac_github"),
        )
        try:
            await found.start("embedder", "embedder", embedder_port)
            await found.start("receiver", "receiver", homeserver.as_port)
            await found.start("worker-a", "worker")
            await found.start("worker-b", "worker")
            yield found
        finally:
            await found.stop_and_check()


@pytest.fixture
async def running(
    deployed: Deployment, model: FakeOpenAI
) -> AsyncIterator[tuple[Deployment, FakeOpenAI]]:
    """The module's deployment whole again: what an earlier test killed is started again, every
    process is ready, and the model has no script left and no requests recorded."""
    async with deployed.whole():
        model.clear()
        yield deployed, model


async def all_answered_once(
    processes: Deployment, alice: MatrixClient, room: str, sent: list[str]
) -> None:
    """Every message answered, once, and handled once in the inbox (a duplicate, if any, has
    been sent by the time this returns)."""
    db = await asyncpg.connect(processes.database_url)
    try:
        await wait_for_replies(alice, room, sent, timeout=90, bot_db=db)
        assert_one_reply_each(alice, room, sent, processes.bot_id)
        await handled_once(db, sent)
    finally:
        await db.close()


async def holder_of(deployment: Deployment, names: list[str]) -> str:
    """The worker that holds a room now (the one with a room in its /ready)."""
    async with asyncio.timeout(30):
        while True:
            for name in names:
                body = await deployment.ready(name)
                if body["checks"]["leases"]["rooms"]:
                    return name
            await asyncio.sleep(0.05)


async def test_two_workers_handle_many_rooms_each_event_once_in_order(
    homeserver: Homeserver, running: tuple[Deployment, FakeOpenAI]
) -> None:
    processes, _ = running
    rooms = [await room_with_bot(homeserver, processes.bot_id) for _ in range(6)]
    sent: dict[str, list[str]] = {}

    async def chatter(alice: MatrixClient, room: str) -> None:
        sent[room] = [await alice.send_text(room, f"!ping {n}") for n in range(8)]

    await asyncio.gather(*(chatter(alice, room) for alice, room in rooms))
    db = await asyncpg.connect(processes.database_url)
    try:
        for alice, room in rooms:
            await wait_for_replies(alice, room, sent[room], timeout=60, bot_db=db)
            assert_one_reply_each(alice, room, sent[room], processes.bot_id)
            # In order: the replies come in the order of the questions.
            replied = [
                e["content"]["m.relates_to"]["m.in_reply_to"]["event_id"]
                for e in alice.timeline[room]
                if e["sender"] == processes.bot_id
                and "m.in_reply_to" in e["content"].get("m.relates_to", {})
            ]
            assert replied == sent[room]
            await handled_once(db, sent[room])
    finally:
        await db.close()
    done = {
        name: await processes.metric(name, 'doryo_events_processed_total{outcome="done"}')
        for name in ("worker-a", "worker-b")
    }
    misses = {
        name: await processes.metric(name, "doryo_room_lease_misses_total")
        for name in ("worker-a", "worker-b")
    }
    print(f"events handled per worker: {done}; woken for a room the other held: {misses}")
    assert sum(done.values()) >= 6 * 8
    # Each wake-up goes to the room's preferred worker only; the other stays out (without
    # the preference, as many misses as events).
    assert sum(misses.values()) <= 0.25 * sum(done.values())
    jobs = [
        name
        for name in ("worker-a", "worker-b")
        if await processes.metric(name, "doryo_jobs_held")
    ]
    assert len(jobs) == 1  # the run-once jobs run in exactly one process
    # The model's processes are the embedder's only: the others run without it.
    for name in ("receiver", "worker-a", "worker-b"):
        assert not children(processes.processes[name].pid), name
    assert len(children(processes.processes["embedder"].pid)) >= 2  # its two lanes


async def host_dm(homeserver: Homeserver, processes: Deployment) -> tuple[MatrixClient, str]:
    """A person with a workspace of her own, and her DM with the bot, where @ask answers."""
    alice = await homeserver.user("alice")
    room = await alice.create_room(
        invite=[processes.bot_id], is_direct=True, preset="trusted_private_chat"
    )
    await alice.wait_for(room, lambda e: e["sender"] == processes.bot_id, timeout=30)
    created = await command(alice, room, "!ws create Rocket", timeout=30)
    assert "is ready" in created, created
    return alice, room


def answers_in(alice: MatrixClient, room: str, bot_id: str) -> list[JSON]:
    """The bot's answer messages (not their edits)."""
    return [
        e
        for e in alice.timeline[room]
        if e["sender"] == bot_id
        and ANSWER_KEY in e["content"]
        and e["content"].get("m.relates_to", {}).get("rel_type") != "m.replace"
    ]


async def test_a_worker_killed_mid_answer_is_taken_over_and_answers_once(
    homeserver: Homeserver, running: tuple[Deployment, FakeOpenAI]
) -> None:
    processes, model = running
    alice, room = await host_dm(homeserver, processes)
    # The first call of the model never answers: the worker is killed while it waits.
    model.script(Hang(), Answer("Recovered after the takeover."))
    question = await alice.send_text(room, "@ask what did we decide?")

    async def asked() -> bool:
        return any(r.path.endswith("/chat/completions") for r in model.requests)

    await eventually(asked, timeout=30)
    victim = await holder_of(processes, ["worker-a", "worker-b"])
    survivor = "worker-b" if victim == "worker-a" else "worker-a"
    takeovers = await processes.metric(survivor, "doryo_takeovers_total")
    killed_at = time.monotonic()
    processes.kill(victim)
    _, content = await final_answer(alice, room, question, timeout=60)
    recovered = time.monotonic() - killed_at
    print(f"@ask: {victim} killed mid-answer; {survivor} answered {recovered:.1f} s later")
    assert content[ANSWER_KEY]["status"] == "done"
    assert "Recovered after the takeover." in content["body"]
    await alice.sync_once(timeout_ms=500)
    # The crashed run's message is the one finished, not a second.
    assert len(answers_in(alice, room, processes.bot_id)) == 1
    assert await processes.metric(survivor, "doryo_takeovers_total") > takeovers


async def test_a_worker_killed_mid_stream_loses_nothing_and_repeats_nothing(
    homeserver: Homeserver, running: tuple[Deployment, FakeOpenAI]
) -> None:
    processes, _ = running
    alice, room = await room_with_bot(homeserver, processes.bot_id)
    sending = await pings(alice, room, 40)
    victim = await holder_of(processes, ["worker-a", "worker-b"])
    killed_at = time.monotonic()
    processes.kill(victim)
    sent = await sending
    await all_answered_once(processes, alice, room, sent)
    recovered = time.monotonic() - killed_at
    print(f"!ping ×40: {victim} killed mid-stream; all answered once {recovered:.1f} s later")
    assert Counter(processes.processes[n].returncode for n in processes.processes)[None] == 3


async def pings(alice: MatrixClient, room: str, count: int) -> asyncio.Future[list[str]]:
    semaphore = asyncio.Semaphore(8)

    async def ping(n: int) -> str:
        async with semaphore:
            return await alice.send_text(room, f"!ping {n}")

    return asyncio.gather(*(ping(n) for n in range(count)))


async def test_the_receiver_killed_mid_stream_loses_nothing(
    homeserver: Homeserver, running: tuple[Deployment, FakeOpenAI]
) -> None:
    """Killed between journaling transactions and unpacking them, or in the middle of either:
    the homeserver retries what got no answer, the journal keeps what did."""
    processes, _ = running
    alice, room = await room_with_bot(homeserver, processes.bot_id)
    sending = await pings(alice, room, 40)
    db = await asyncpg.connect(processes.database_url)
    try:
        await eventually(
            lambda: db.fetchval("SELECT count(*) >= 5 FROM appservice_transactions"), timeout=30
        )
        processes.kill("receiver")
        killed_at = time.monotonic()
        await processes.processes["receiver"].wait()
        await processes.start("receiver", "receiver", homeserver.as_port)
        sent = await sending
        await all_answered_once(processes, alice, room, sent)
        recovered = time.monotonic() - killed_at
    finally:
        await db.close()
    print(
        f"!ping ×40: the receiver killed and restarted; all answered once {recovered:.1f} s later"
    )


async def test_every_database_connection_cut_mid_stream_loses_and_repeats_nothing(
    homeserver: Homeserver, running: tuple[Deployment, FakeOpenAI]
) -> None:
    """What a PostgreSQL restart does to each process: its pool and its lease connection are
    cut. The leases are lost (rooms and jobs free for anyone) and taken again: /ready says they
    are held, and exactly one worker runs the jobs."""
    processes, _ = running
    alice, room = await room_with_bot(homeserver, processes.bot_id)
    sending = await pings(alice, room, 40)
    db = await asyncpg.connect(processes.database_url)
    try:
        await eventually(
            lambda: db.fetchval(
                "SELECT count(*) >= 5 FROM inbox_events WHERE room_id = $1 AND state = 'done'",
                room,
            ),
            timeout=30,
        )
        cut = await db.fetchval(
            """
            SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
            WHERE datname = current_database() AND pid <> pg_backend_pid()
            """
        )
        cut_at = time.monotonic()
        sent = await sending
        await all_answered_once(processes, alice, room, sent)
        recovered = time.monotonic() - cut_at
        for name in ("worker-a", "worker-b"):
            body = await processes.ready(name)  # leases held again
            assert body["checks"]["leases"]["ok"]

        async def holding_jobs() -> list[str]:
            return [
                name
                for name in ("worker-a", "worker-b")
                if await processes.metric(name, "doryo_jobs_held")
            ]

        # Taken again by whichever looks first once its lease connection is back: not
        # necessarily before the last answer, never by both.
        await eventually(holding_jobs, timeout=10)
        assert len(await holding_jobs()) == 1
    finally:
        await db.close()
    print(f"!ping ×40: {cut} database connections cut; all answered once {recovered:.1f} s later")


async def test_redis_restarted_while_workers_answer_loses_and_repeats_nothing(
    homeserver: Homeserver, running: tuple[Deployment, FakeOpenAI], redis_server: RedisServer
) -> None:
    """Redis holds the model router's rate limits and budgets: while it is away, calls go
    through (said in the log), and nothing waits for it."""
    processes, _ = running
    alice, room = await host_dm(homeserver, processes)
    await redis_server.stop()
    stopped_at = time.monotonic()
    questions = [await alice.send_text(room, f"@ask what about item {n}?") for n in range(6)]
    await asyncio.sleep(2)
    await redis_server.start()
    for question in questions:
        _, content = await final_answer(alice, room, question, timeout=60)
        assert content[ANSWER_KEY]["status"] == "done"
    recovered = time.monotonic() - stopped_at
    await alice.sync_once(timeout_ms=500)
    asked = Counter(
        e["content"][ANSWER_KEY]["question"] for e in answers_in(alice, room, processes.bot_id)
    )
    assert asked == dict.fromkeys(questions, 1)
    print(f"@ask ×6 while Redis restarted: all answered once {recovered:.1f} s after it stopped")


async def test_synapse_restarted_while_workers_answer_loses_and_repeats_nothing(
    homeserver: Homeserver, running: tuple[Deployment, FakeOpenAI]
) -> None:
    """Synapse stops pushing to the receiver and refuses the workers' replies for a while:
    what it had not delivered it delivers again, what the workers could not send they send
    when it is back, once."""
    processes, _ = running
    alice, room = await room_with_bot(homeserver, processes.bot_id)
    sent: list[str] = []
    a_third_sent = asyncio.Event()

    async def stream() -> None:
        for n in range(30):
            sent.append(await alice.send_text(room, f"!ping {n}", retry_for=60))
            if len(sent) == 10:
                a_third_sent.set()
            await asyncio.sleep(0.05)

    sender = asyncio.create_task(stream())
    await a_third_sent.wait()
    restarted_at = time.monotonic()
    await homeserver.synapse.restart()
    back = time.monotonic() - restarted_at
    await sender
    await all_answered_once(processes, alice, room, sent)
    recovered = time.monotonic() - restarted_at
    print(
        f"!ping ×30: Synapse restarted ({back:.1f} s) under two workers;"
        f" all answered once {recovered:.1f} s after it stopped"
    )


def process_with_key(processes: Deployment, key: int, names: list[str]) -> str:
    """The process whose worker key (its liveness lock, in its log at start) this is."""
    for name in names:
        started = [
            line for line in processes.log(name).splitlines() if "(role worker, worker key" in line
        ]
        if started and started[-1].endswith(f"worker key {key})"):
            return name
    raise AssertionError(f"no process has the worker key {key}")


async def test_a_worker_killed_mid_action_run_never_runs_it_twice(
    homeserver: Homeserver, running: tuple[Deployment, FakeOpenAI], composio: FakeComposio
) -> None:
    """The host confirms a GitHub recipe; the worker running it is killed while Composio makes
    the repository (which it finishes: the caller's death does not undo it). Another worker
    recovers the action: the recipe looks before it makes, finds the repository, and ends
    `done` with its result in the card's thread — the repository made once."""
    processes, _ = running
    alice, room = await host_dm(homeserver, processes)
    await command(alice, room, "!ws settings agent planner", timeout=30)
    composio.connect(alice.user_id, "github")
    making = asyncio.Event()
    release = asyncio.Event()
    make = composio.handlers[TEMPLATE_TOOL]

    async def finish(run: Execution) -> JSON:
        await release.wait()
        return make(run)  # type: ignore[return-value]

    async def slow_make(run: Execution) -> JSON:
        making.set()
        # Shielded: the fake cancels a handler whose caller went away; Composio would not.
        return await asyncio.shield(finish(run))

    composio.on(TEMPLATE_TOOL, slow_make)
    try:
        card = await propose(alice, room, "@act create_github_template repo_name=once template=t")
        await react(alice, room, card["event_id"], "✅")
        await asyncio.wait_for(making.wait(), 30)
        db = await asyncpg.connect(processes.database_url)
        try:
            runner = await db.fetchval(
                "SELECT runner FROM actions WHERE status = 'running' AND tool = $1",
                "create_github_template",
            )
        finally:
            await db.close()
        victim = process_with_key(processes, runner, ["worker-a", "worker-b"])
        processes.kill(victim)
        killed_at = time.monotonic()
        await processes.processes[victim].wait()
        release.set()  # Composio finishes what it was asked, whoever hears the answer
        await wait_status(alice, room, card, "done")
        recovered = time.monotonic() - killed_at
    finally:
        composio.on(TEMPLATE_TOOL, make)
        release.set()
    assert len(composio.executions_of(TEMPLATE_TOOL)) == 1
    result = await alice.wait_for(
        room,
        lambda e: (
            "/once](https://github.com/" in e.get("content", {}).get("body", "")
            and e in in_thread(alice, room, card["event_id"])
        ),
    )
    assert len(result) == 1
    print(f"@act: {victim} killed mid-run; ended done, run once, {recovered:.1f} s later")
