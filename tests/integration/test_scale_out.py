"""Doryo as several processes on one PostgreSQL and Redis: a receiver, an embedder and two
workers, each a real `python -m bot run --role …` process, against a real Synapse. Only the
embedder holds the local embedding model; the receiver and the workers ask it. Workers are
killed with SIGKILL in the middle of their work; each test asserts that nothing is lost, nothing
is answered twice, and prints how long the takeover took."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from bot.core.config import load_config, write_config
from synapse_dev.server import free_port
from tests.client import MatrixClient
from tests.conftest import Homeserver, start_homeserver
from tests.fakes.llm_script import Answer, Hang
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.agent_helpers import ANSWER_KEY, final_answer
from tests.integration.test_resilience import (
    assert_one_reply_each,
    children,
    handled_once,
    room_with_bot,
    wait_for_replies,
)
from tests.integration.workspace_helpers import command
from tests.poll import eventually

ADMIN_TOKEN = secrets.token_urlsafe(16)


@pytest.fixture(scope="module")
async def homeserver(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Homeserver]:
    hs = await start_homeserver(tmp_path_factory.mktemp("synapse"))
    yield hs
    await hs.close_clients()
    await hs.synapse.stop()


@dataclass
class Deployment:
    """The processes of one Doryo deployment, started and stopped by the test."""

    config: Path
    logs: Path
    database_url: str
    bot_id: str
    processes: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    async def start(self, name: str, role: str, port: int | None = None) -> None:
        port = port or free_port()
        args = ["-m", "bot", "run", "-c", str(self.config), "--role", role, "--port", str(port)]
        with (self.logs / f"{name}.log").open("ab") as log_file:
            self.processes[name] = await asyncio.create_subprocess_exec(
                sys.executable,
                *args,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
            )
        self.ports[name] = port
        await self.ready(name)

    async def ready(self, name: str, timeout: float = 90) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with aiohttp.ClientSession(headers=headers) as session, asyncio.timeout(timeout):
            while True:
                if self.processes[name].returncode is not None:
                    raise AssertionError(f"{name} exited: {self.log(name)[-3000:]}")
                try:
                    url = f"http://127.0.0.1:{self.ports[name]}/ready"
                    async with session.get(url) as response:
                        if response.status == 200:
                            body: dict[str, Any] = await response.json()
                            return body
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)

    async def metric(self, name: str, metric: str) -> float:
        """A metric's value (summed over its labels) from the process's /metrics."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{self.ports[name]}/metrics") as response,
        ):
            text = await response.text()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(metric) and not line.startswith("#")
        )

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def kill(self, name: str) -> None:
        os.kill(self.processes[name].pid, signal.SIGKILL)

    async def stop(self) -> dict[str, int | None]:
        for process in self.processes.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        codes = {}
        for name, process in self.processes.items():
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
            codes[name] = process.returncode
        return codes


@pytest.fixture
async def deployment(
    homeserver: Homeserver, database_url: str, redis_url: str, tmp_path: Path
) -> AsyncIterator[tuple[Deployment, FakeOpenAI]]:
    async with FakeOpenAI(default=Answer("Done by a worker.")) as model:
        config = tmp_path / "config.yaml"
        embedder_port = free_port()
        write_config(
            config,
            {
                "homeserver": {"address": homeserver.url, "domain": "localhost"},
                "appservice": {
                    "port": homeserver.as_port,
                    "as_token": homeserver.as_token,
                    "hs_token": homeserver.hs_token,
                },
                "database": {"url": database_url},
                "redis": {"url": redis_url, "key_prefix": f"so{os.getpid()}{time.time_ns()}:"},
                "llm": {
                    "providers": {
                        "local": {"kind": "openai", "base_url": model.base_url, "api_key": ""}
                    },
                    "timeouts": {"total": 30, "first_token": 20, "connect": 2},
                    "retries": {"attempts": 1, "backoff": 0.01, "max_backoff": 0.05},
                },
                # The model in the embedder only: the others ask it.
                "embeddings": {
                    "model": "local/all-minilm-l6-v2",
                    "local_url": f"http://127.0.0.1:{embedder_port}",
                    "timeout": 10,
                },
                "admin_api": {"token": ADMIN_TOKEN},
                "data_dir": str(tmp_path),
            },
        )
        bot_id = load_config(config).bot_user_id
        found = Deployment(config, tmp_path, database_url, bot_id)
        try:
            await found.start("embedder", "embedder", embedder_port)
            await found.start("receiver", "receiver", homeserver.as_port)
            await found.start("worker-a", "worker")
            await found.start("worker-b", "worker")
            yield found, model
        finally:
            codes = await found.stop()
            for name, code in codes.items():
                assert code in (0, -signal.SIGKILL), f"{name}: {found.log(name)[-3000:]}"


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
    homeserver: Homeserver, deployment: tuple[Deployment, FakeOpenAI]
) -> None:
    processes, _ = deployment
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
    print(f"events handled per worker: {done}")
    assert sum(done.values()) >= 6 * 8
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


async def test_a_worker_killed_mid_answer_is_taken_over_and_answers_once(
    homeserver: Homeserver, deployment: tuple[Deployment, FakeOpenAI]
) -> None:
    processes, model = deployment
    alice = await homeserver.user("alice")
    room = await alice.create_room(
        invite=[processes.bot_id], is_direct=True, preset="trusted_private_chat"
    )
    await alice.wait_for(room, lambda e: e["sender"] == processes.bot_id, timeout=30)
    created = await command(alice, room, "!ws create Rocket", timeout=30)
    assert "is ready" in created, created
    # The first call of the model never answers: the worker is killed while it waits.
    model.script(Hang(), Answer("Recovered after the takeover."))
    question = await alice.send_text(room, "@ask what did we decide?")

    async def asked() -> bool:
        return any(r.path.endswith("/chat/completions") for r in model.requests)

    await eventually(asked, timeout=30)
    victim = await holder_of(processes, ["worker-a", "worker-b"])
    survivor = "worker-b" if victim == "worker-a" else "worker-a"
    killed_at = time.monotonic()
    processes.kill(victim)
    _, content = await final_answer(alice, room, question, timeout=60)
    recovered = time.monotonic() - killed_at
    print(f"@ask: {victim} killed mid-answer; {survivor} answered {recovered:.1f} s later")
    assert content[ANSWER_KEY]["status"] == "done"
    assert "Recovered after the takeover." in content["body"]
    await alice.sync_once(timeout_ms=500)
    answers = [
        e
        for e in alice.timeline[room]
        if e["sender"] == processes.bot_id
        and ANSWER_KEY in e["content"]
        and e["content"].get("m.relates_to", {}).get("rel_type") != "m.replace"
    ]
    assert len(answers) == 1  # the crashed run's message is the one finished, not a second
    assert await processes.metric(survivor, "doryo_takeovers_total") >= 1


async def test_a_worker_killed_mid_stream_loses_nothing_and_repeats_nothing(
    homeserver: Homeserver, deployment: tuple[Deployment, FakeOpenAI]
) -> None:
    processes, _ = deployment
    alice, room = await room_with_bot(homeserver, processes.bot_id)
    sending = await pings(alice, room, 40)
    victim = await holder_of(processes, ["worker-a", "worker-b"])
    killed_at = time.monotonic()
    processes.kill(victim)
    sent = await sending
    db = await asyncpg.connect(processes.database_url)
    try:
        await wait_for_replies(alice, room, sent, timeout=60, bot_db=db)
        recovered = time.monotonic() - killed_at
        assert_one_reply_each(alice, room, sent, processes.bot_id)
        await handled_once(db, sent)
    finally:
        await db.close()
    print(f"!ping ×40: {victim} killed mid-stream; all answered once {recovered:.1f} s later")
    assert Counter(processes.processes[n].returncode for n in processes.processes)[None] == 3


async def pings(alice: MatrixClient, room: str, count: int) -> asyncio.Future[list[str]]:
    semaphore = asyncio.Semaphore(8)

    async def ping(n: int) -> str:
        async with semaphore:
            return await alice.send_text(room, f"!ping {n}")

    return asyncio.gather(*(ping(n) for n in range(count)))


async def test_the_receiver_killed_mid_stream_loses_nothing(
    homeserver: Homeserver, deployment: tuple[Deployment, FakeOpenAI]
) -> None:
    """Killed between journaling transactions and unpacking them, or in the middle of either:
    the homeserver retries what got no answer, the journal keeps what did."""
    processes, _ = deployment
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
        await wait_for_replies(alice, room, sent, timeout=90, bot_db=db)
        recovered = time.monotonic() - killed_at
        assert_one_reply_each(alice, room, sent, processes.bot_id)
        await handled_once(db, sent)
    finally:
        await db.close()
    print(
        f"!ping ×40: the receiver killed and restarted; all answered once {recovered:.1f} s later"
    )


async def test_every_database_connection_cut_mid_stream_loses_and_repeats_nothing(
    homeserver: Homeserver, deployment: tuple[Deployment, FakeOpenAI]
) -> None:
    """What a PostgreSQL restart does to each process: its pool and its lease connection are
    cut. The leases are lost (rooms and jobs free for anyone), taken again, and /ready says so
    meanwhile."""
    processes, _ = deployment
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
        await wait_for_replies(alice, room, sent, timeout=90, bot_db=db)
        recovered = time.monotonic() - cut_at
        assert_one_reply_each(alice, room, sent, processes.bot_id)
        await handled_once(db, sent)
        for name in ("worker-a", "worker-b"):
            body = await processes.ready(name)  # leases held again
            assert body["checks"]["leases"]["ok"]
        jobs = [
            name
            for name in ("worker-a", "worker-b")
            if await processes.metric(name, "doryo_jobs_held")
        ]
        assert len(jobs) == 1
    finally:
        await db.close()
    print(f"!ping ×40: {cut} database connections cut; all answered once {recovered:.1f} s later")
