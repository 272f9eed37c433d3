"""Load: many rooms, people writing and asking at once, against Doryo with 1, 2 and 4 workers and
against a bare appservice that only echoes — on the same Synapse, in the same run.

    .venv/bin/python bench/load.py [--rooms 50] [--rates 10,30] [--seconds 30] [--workers 1,2,4]
                                   [--rounds 3] [--embeddings provider|local]
                                   [--echo-like-doryo [all|ephemeral]] [--echo-reads]
                                   [--synapse-database postgres|memory] [--pin]
                                   [--profile-synapse DIR] [--synapse-metrics]
                                   [--parallel-rooms N]

Doryo runs as real processes (docs/deployment.md): a receiver and N workers (and, with
`--embeddings local`, an embedder serving all-MiniLM-L6-v2), on an embedded PostgreSQL and a
private Redis; the model, and by default the embeddings, are fast fakes on 127.0.0.1. Synapse
keeps its database in the same PostgreSQL, as a production Synapse would (`--synapse-database
memory`: SQLite in memory, which slowed Synapse as it filled — the echo's p95 went from 72 to
874 ms over one run). Two
people write in `--rooms` sessions of a workspace at `--rate` messages a second in all: one
message in three is a request (`!ping` or `@ask …`), the rest is chatter, which Doryo records
and embeds. The echo appservice (this script with --echo, a process of its own) sits in as many
plain rooms of the same Synapse and answers each request with one reply, as soon as its
transaction arrives: the floor any appservice stands on.

Per phase: messages/s offered and accepted by Synapse, requests answered, p50/p95 from a request
reaching Synapse to the reply reaching Synapse (both `origin_server_ts`, Synapse's clock), and
the CPU of Synapse, of the appservice's processes and of the whole machine (% of one core);
for Doryo, where the reply time goes (Synapse to the receiver, journaled to the reply). At each
rate: a warm-up of the echo and of Doryo (not counted), then `--rounds` rounds of the echo and
Doryo with each number of workers (in a rotated order, so that a drift in Synapse's speed
falls on each alike), and the echo once more; each is summarised by the median of its phases'
p95 and their range. Target (issue 20): at the rate where
Synapse saturates, Doryo's p95 within 1.25× of the echo's, and more workers never slower.

`--pin` gives Synapse and the appservice a core each, as a machine with cores to spare would:
Synapse, a PostgreSQL of its own, this script (the people writing, the fake model) on CPU 0;
the appservice (the echo, or Doryo's processes with their PostgreSQL and Redis) on CPU 1. Then
what Doryo costs shows as its own core's load, not as Synapse's slowdown. `--echo-like-doryo`
and `--echo-reads` make the echo ask Synapse for what Doryo asks (its registration's ephemeral
events and device lists; the state reads before an `@ask`'s answer), to see what each costs.
`--profile-synapse DIR` records Synapse with py-spy (`pip install py-spy`) while each phase sends,
one file of folded stacks a phase, to compare where its time goes for the echo and for Doryo.
`--synapse-metrics` serves Synapse's own metrics and prints, for each phase, the CPU and
database time of its background processes (the appservice sender among them) and servlets —
database time that py-spy, sampling Synapse's process, does not see. `--parallel-rooms`: the
rooms each Doryo process works through at once (`bot.max_parallel_rooms`).

Each phase also splits the reply time by kind (`!ping` asks Synapse nothing before its reply;
an `@ask` first reads who may ask), and gives the time from Synapse to the appservice for the
echo as for Doryo, so that what Synapse's delivery costs and what happens inside Doryo are told
apart.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import psutil
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.core.embedded_pg import start_embedded, stop_embedded  # noqa: E402
from synapse_dev.server import free_port, postgres_database_sql  # noqa: E402
from tests.client import MatrixClient  # noqa: E402
from tests.conftest import Homeserver, start_homeserver  # noqa: E402
from tests.fakes.llm_script import Answer  # noqa: E402
from tests.fakes.openai_server import FakeOpenAI  # noqa: E402
from tests.integration.workspace_helpers import (  # noqa: E402
    accept,
    command,
    invited_rooms,
    link_target,
)
from tests.processes import Deployment, deployment  # noqa: E402

ECHO = "echo"


# -- the echo appservice ------------------------------------------------------------------------


def is_request(body: object) -> bool:
    return isinstance(body, str) and (body.startswith("!ping") or body.startswith("@ask"))


async def run_echo(
    port: int, homeserver: str, as_token: str, hs_token: str, *, reads: bool = False
) -> None:
    """Answer each request with a reply, from the transaction's handler (after the 200).
    `reads`: before answering an `@ask`, read the asker's membership and the power levels, as
    Doryo reads them in the workspace's space to know who may ask (two requests at once)."""
    http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {as_token}"})
    me = f"@{ECHO}:localhost"
    counter = itertools.count()
    tasks: set[asyncio.Task[None]] = set()
    received = [0]  # transactions
    lags: list[float] = []  # ms from each request reaching Synapse to its transaction here

    async def send(room: str, content: dict[str, Any]) -> None:
        url = (
            f"{homeserver}/_matrix/client/v3/rooms/{quote(room)}/send/m.room.message/"
            f"e{next(counter)}.{os.getpid()}"
        )
        for _ in range(5):
            try:
                async with http.put(url, json=content) as response:
                    if response.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)

    async def read(room: str, state: str) -> None:
        url = f"{homeserver}/_matrix/client/v3/rooms/{quote(room)}/state/{state}"
        async with http.get(url) as response:
            await response.read()

    async def answer(event: dict[str, Any]) -> None:
        room = event["room_id"]
        if reads and event["content"]["body"].startswith("@ask"):
            member = f"m.room.member/{quote(event['sender'])}"
            await asyncio.gather(read(room, member), read(room, "m.room.power_levels"))
        await send(
            room,
            {
                "msgtype": "m.notice",
                "body": "echo",
                "m.relates_to": {"m.in_reply_to": {"event_id": event["event_id"]}},
            },
        )

    async def join(room: str) -> None:
        async with http.post(f"{homeserver}/_matrix/client/v3/join/{quote(room)}", json={}):
            pass

    def handle(event: dict[str, Any]) -> None:
        content = event.get("content") or {}
        if (
            event.get("type") == "m.room.member"
            and event.get("state_key") == me
            and content.get("membership") == "invite"
        ):
            work = join(event["room_id"])
        elif (
            event.get("type") == "m.room.message"
            and event.get("sender") != me
            and is_request(content.get("body"))
        ):
            work = answer(event)
        else:
            return
        task = asyncio.create_task(work)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def transactions(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {hs_token}":
            return web.json_response({"errcode": "M_FORBIDDEN"}, status=403)
        body = await request.json()
        received[0] += 1
        now = time.time() * 1000
        for event in body.get("events", []):
            if is_request((event.get("content") or {}).get("body")):
                lags.append(now - event.get("origin_server_ts", now))
            handle(event)
        return web.json_response({})

    async def pending(_: web.Request) -> web.Response:
        return web.json_response(
            {"pending": len(tasks), "transactions": received[0], "lags": lags}
        )

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_put("/_matrix/app/v1/transactions/{txn}", transactions)
    app.router.add_post("/_matrix/app/v1/ping", lambda _: web.json_response({}))
    app.router.add_get("/pending", pending)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


async def profile(
    where: str | None, hs: Homeserver, n: int, name: str, seconds: float
) -> asyncio.subprocess.Process | None:
    """py-spy recording Synapse for the phase's sending (`--profile-synapse`)."""
    if where is None:
        return None
    await asyncio.to_thread(Path(where).mkdir, parents=True, exist_ok=True)
    out = Path(where) / f"{n:02d}-{name.replace(' ', '').replace('×', 'x')}.txt"
    pid = hs.synapse._process.pid  # type: ignore[union-attr]
    return await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(pid),
        "-d", str(int(seconds)), "-r", "50", "-f", "raw", "-o", str(out), "--nonblocking",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


def metrics_listener(port: int) -> dict[str, Any]:
    """homeserver.yaml keys that also serve Synapse's metrics on its client port (the keys are
    appended after the template's: the last `listeners` is the one Synapse reads)."""
    return {
        "enable_metrics": True,
        "listeners": [
            {
                "port": port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                "resources": [{"names": ["client", "metrics"], "compress": False}],
            }
        ],
    }


# Synapse's own accounts of where its time goes, each a sum in seconds with one label to group by.
SYNAPSE_SPENT = {
    "synapse_background_process_ru_utime_seconds_total": "name",
    "synapse_background_process_db_txn_duration_seconds_total": "name",
    "synapse_background_process_db_sched_duration_seconds_total": "name",
    "synapse_http_server_response_ru_utime_seconds_total": "servlet",
    "synapse_http_server_response_db_txn_duration_seconds_total": "servlet",
    "synapse_storage_transaction_time_sum_total": "desc",
}


async def synapse_metrics(hs: Homeserver) -> dict[tuple[str, str], float]:
    """Synapse's SYNAPSE_SPENT sums now, by (metric, label value)."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{hs.url}/_synapse/metrics") as response:
            text = await response.text()
    totals: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if line.startswith("#") or "{" not in line:
            continue
        metric, rest = line.split("{", 1)
        label = SYNAPSE_SPENT.get(metric)
        if label is None:
            continue
        labels, value = rest.rsplit("} ", 1)
        pairs = (part.split("=", 1) for part in labels.split(",") if "=" in part)
        found = next((v.strip('"') for k, v in pairs if k == label), "?")
        totals[(metric, found)] = totals.get((metric, found), 0.0) + float(value)
    return totals


def where_synapse_spent(
    before: dict[tuple[str, str], float], after: dict[tuple[str, str], float], top: int = 6
) -> str:
    """The phase's biggest items of each of Synapse's accounts, in ms of its time."""
    lines = []
    for metric in SYNAPSE_SPENT:
        spent = sorted(
            (
                (value - before.get(key, 0.0), key[1])
                for key, value in after.items()
                if key[0] == metric and value > before.get(key, 0.0)
            ),
            reverse=True,
        )
        if spent:
            short = metric.removeprefix("synapse_").removesuffix("_total")
            lines.append(
                f"  {'':<16}        {short}: "
                + ", ".join(f"{what} {seconds * 1000:.0f}" for seconds, what in spent[:top])
                + f" (all {sum(s for s, _ in spent) * 1000:.0f} ms)"
            )
    return "\n".join(lines)


def echo_registration(
    port: int, as_token: str, hs_token: str, *, like_doryo: str | None = None
) -> dict[str, Any]:
    """`like_doryo`: asking Synapse for what Doryo's registration asks for — "all" (ephemeral
    events and device lists) or "ephemeral" only: what that costs Synapse is then in the floor
    too."""
    extra: dict[str, Any] = {}
    if like_doryo in ("all", "ephemeral"):
        extra["receive_ephemeral"] = True
    if like_doryo == "all":
        extra |= {"org.matrix.msc3202": True, "io.element.msc4190": True}
    return {
        "id": "echo",
        "url": f"http://127.0.0.1:{port}",
        "as_token": as_token,
        "hs_token": hs_token,
        "sender_localpart": ECHO,
        "namespaces": {"users": [], "aliases": [], "rooms": []},
        "rate_limited": False,
        **extra,
    }


# -- measuring --------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
            for child in process.children(recursive=True):
                child_times = child.cpu_times()
                total += child_times.user + child_times.system
        except psutil.Error:
            continue
    return total


SYNAPSE_CPU, SERVICE_CPU = {0}, {1}


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of a process and of its descendants on these CPUs (those it starts later
    inherit it)."""
    try:
        processes = [psutil.Process(pid)]
        processes += processes[0].children(recursive=True)
    except psutil.Error:
        return
    for process in processes:
        for task in Path(f"/proc/{process.pid}/task").glob("*"):
            try:
                os.sched_setaffinity(int(task.name), cpus)
            except (OSError, ValueError):
                continue


def busy_seconds() -> float:
    times = psutil.cpu_times()
    return float(times.user + times.nice + times.system + times.irq + times.softirq)


@dataclass
class Sent:
    room: str
    event_id: str
    request: bool
    ping: bool = False


@dataclass
class Phase:
    name: str
    rate: int
    warm_up: bool = False
    sent: list[Sent] = field(default_factory=list)
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    ping_latencies: list[float] = field(default_factory=list)
    ask_latencies: list[float] = field(default_factory=list)
    """By kind: `!ping` needs nothing from Synapse before its reply; an `@ask` first reads the
    asker's membership and the power levels (who may ask is decided from the space's state now)."""
    to_receiver: list[float] = field(default_factory=list)
    """Doryo: from a request reaching Synapse to its transaction journaled (ms)."""
    in_doryo: list[float] = field(default_factory=list)
    """Doryo: from journaled to the reply reaching Synapse (ms)."""
    in_doryo_behind: list[float] = field(default_factory=list)
    """The same, of the requests that came in while an earlier event of their room was not
    handled yet."""
    transactions: float = 0.0
    ack_ms: float = 0.0
    """Doryo: transactions the receiver took in the phase, and its mean time to answer one."""
    answered: int = 0
    asked_of_synapse: dict[str, float] = field(default_factory=dict)
    """Doryo: requests its processes made of Synapse in the phase, by kind."""
    synapse_cpu: float = 0.0
    service_cpu: float = 0.0
    machine_cpu: float = 0.0
    """All processes of the machine, % of one core (200 % = both cores of a 2-core one)."""
    drained: bool = True

    def report(self) -> str:
        requests = sum(1 for s in self.sent if s.request)
        if not self.latencies:
            return f"  {self.name:<16} {self.rate:>3}/s  no replies"
        return (
            f"  {self.name:<16} {self.rate:>3}/s  accepted {len(self.sent) / self.seconds:5.1f}"
            f" msg/s  answered {self.answered}/{requests}"
            f"  reply p50 {statistics.median(self.latencies):7.0f} ms"
            f"  p95 {pct(self.latencies, 95):7.0f} ms"
            f" (!ping p50 {statistics.median(self.ping_latencies or [0]):5.0f}"
            f" p95 {pct(self.ping_latencies or [0], 95):5.0f};"
            f" @ask p95 {pct(self.ask_latencies or [0], 95):5.0f})"
            f"  CPU synapse {self.synapse_cpu:4.0f} %  appservice {self.service_cpu:4.0f} %"
            f"  machine {self.machine_cpu:4.0f} %"
            + (f"  {self.transactions:.0f} transactions" if not self.in_doryo else "")
            + (
                f"\n  {'':<16}        of which: Synapse to the echo p50"
                f" {statistics.median(self.to_receiver):6.0f} ms,"
                f" p95 {pct(self.to_receiver, 95):6.0f} ms"
                if self.to_receiver and not self.in_doryo
                else ""
            )
            + ("" if self.drained else "  (not drained)")
            + (
                f"\n  {'':<16}        of which: Synapse to the receiver p50"
                f" {statistics.median(self.to_receiver):6.0f} ms,"
                f" p95 {pct(self.to_receiver, 95):6.0f} ms; journaled to reply p50"
                f" {statistics.median(self.in_doryo):6.0f} ms,"
                f" p95 {pct(self.in_doryo, 95):6.0f} ms"
                f" ({len(self.in_doryo_behind)} behind another event of their room: p50"
                f" {statistics.median(self.in_doryo_behind or [0]):6.0f} ms,"
                f" p95 {pct(self.in_doryo_behind or [0], 95):6.0f} ms);"
                f" {self.transactions:.0f}"
                f" transactions, answered in {self.ack_ms:.1f} ms on average"
                if self.to_receiver and self.in_doryo
                else ""
            )
            + (
                f"\n  {'':<16}        asked of Synapse per request answered: "
                f"{sum(self.asked_of_synapse.values()) / max(1, self.answered):.2f} ("
                + ", ".join(
                    f"{kind} {count / max(1, self.answered):.2f}"
                    for kind, count in sorted(self.asked_of_synapse.items(), key=lambda kv: -kv[1])
                    if count
                )
                + ")"
                if self.asked_of_synapse
                else ""
            )
        )


async def room_events(person: MatrixClient, room: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    token = ""
    while True:
        path = f"/v3/rooms/{quote(room)}/messages?dir=b&limit=1000" + (
            f"&from={quote(token)}" if token else ""
        )
        page = await person.request("GET", path)
        events += page.get("chunk", [])
        token = page.get("end", "")
        if not token or not page.get("chunk"):
            return events


def replied_to(event: dict[str, Any]) -> str | None:
    content = event.get("content") or {}
    relates = content.get("m.relates_to") or {}
    if relates.get("rel_type") == "m.replace":
        return None
    answer = content.get("org.doryo.answer")
    if isinstance(answer, dict) and isinstance(answer.get("question"), str):
        return answer["question"]
    reply = (relates.get("m.in_reply_to") or {}).get("event_id")
    return reply if isinstance(reply, str) else None


async def measure(
    phase: Phase, person: MatrixClient, bots: set[str], database_url: str | None
) -> None:
    times: dict[str, int] = {}
    replies: dict[str, int] = {}
    for room in {s.room for s in phase.sent}:
        for event in await room_events(person, room):
            times[event["event_id"]] = event["origin_server_ts"]
            if event.get("sender") in bots:
                target = replied_to(event)
                if target is not None:
                    replies[target] = min(replies.get(target, 2**62), event["origin_server_ts"])
    for sent in phase.sent:
        if sent.request and sent.event_id in replies:
            phase.answered += 1
            latency = replies[sent.event_id] - times[sent.event_id]
            phase.latencies.append(latency)
            (phase.ping_latencies if sent.ping else phase.ask_latencies).append(latency)
    if database_url is None:
        return
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        # `behind`: an earlier event of the same room was not done yet when this one came in,
        # so it waited for that one (a room's events are started in order) — or, since rooms
        # go on past an answer (bot.core.dispatcher.room_may_go_on), ran beside it: then the
        # count is an upper bound of those that waited.
        rows = await conn.fetch(
            "SELECT r.event_id, extract(epoch FROM r.received_at) * 1000 AS at,"
            " EXISTS (SELECT 1 FROM inbox_events o WHERE o.room_id = r.room_id AND o.id < r.id"
            "   AND (o.handled_at IS NULL OR o.handled_at > r.received_at)) AS behind"
            " FROM inbox_events r WHERE r.event_id = any($1::text[])",
            [s.event_id for s in phase.sent if s.request],
        )
    finally:
        await conn.close()
    for row in rows:
        if row["event_id"] in replies:
            at = float(row["at"])
            phase.to_receiver.append(at - times[row["event_id"]])
            phase.in_doryo.append(replies[row["event_id"]] - at)
            if row["behind"]:
                phase.in_doryo_behind.append(replies[row["event_id"]] - at)


# -- the run ----------------------------------------------------------------------------------


async def send_load(
    phase: Phase, people: list[MatrixClient], rooms: list[str], seconds: float
) -> None:
    rng = random.Random(phase.rate)
    count = int(phase.rate * seconds)
    semaphore = asyncio.Semaphore(64)
    started = time.monotonic()

    async def one(n: int) -> None:
        await asyncio.sleep(max(0.0, started + n / phase.rate - time.monotonic()))
        room = rng.choice(rooms)
        kind = n % 3
        if kind == 0:
            body = f"!ping {n}" if n % 2 else f"@ask what did we say about item {n % 97}?"
        else:
            body = f"Note {n}: item {n % 97} moves to week {n % 52}, says the plan."
        async with semaphore:
            event_id = await people[n % len(people)].send_text(room, body, retry_for=30)
        phase.sent.append(Sent(room, event_id, kind == 0, body.startswith("!ping")))

    await asyncio.gather(*(one(n) for n in range(count)))
    phase.seconds = time.monotonic() - started


async def drained(check: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.5)
    return False


async def run(args: argparse.Namespace) -> None:
    rates = [int(r) for r in args.rates.split(",")]
    worker_counts = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="doryo-load-") as tmp:
        root = Path(tmp)
        if args.pin:
            pin(os.getpid(), SYNAPSE_CPU)
        pg_url, pg = await start_embedded(root / "pg")
        # Pinned, Synapse has a PostgreSQL of its own on its core; otherwise they share one.
        synapse_pg = (await start_embedded(root / "pg-synapse"))[1] if args.pin else pg
        redis_port = free_port()
        redis = await asyncio.create_subprocess_exec(
            "redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no",
            stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        if args.pin:
            pin(pg.get_postmaster_info().pid, SERVICE_CPU)
            pin(synapse_pg.get_postmaster_info().pid, SYNAPSE_CPU)
            pin(redis.pid, SERVICE_CPU)
        echo_port = free_port()
        echo_tokens = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        echo_path = root / "echo-registration.yaml"
        echo_path.write_text(
            json.dumps(echo_registration(echo_port, *echo_tokens, like_doryo=args.echo_like_doryo))
        )
        synapse_dir = (root / "synapse").resolve()
        synapse_port = free_port()
        hs: Homeserver = await start_homeserver(
            synapse_dir,
            port=synapse_port,
            **(
                {"postgres": await synapse_database(synapse_pg)}
                if args.synapse_database == "postgres"
                else {"in_memory": True}
            ),
            extra_config={
                "app_service_config_files": [
                    str(synapse_dir / "appservice-registration.yaml"),
                    str(echo_path),
                ],
                **(metrics_listener(synapse_port) if args.synapse_metrics else {}),
            },
        )
        echo = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--echo", str(echo_port), hs.url, *echo_tokens,
            *(["--echo-reads"] if args.echo_reads else []),
        )  # fmt: skip
        if args.pin:
            pin(hs.synapse._process.pid, SYNAPSE_CPU)  # type: ignore[union-attr]
            pin(echo.pid, SERVICE_CPU)
        model = FakeOpenAI(default=Answer("Item 12 moves to week 3, as the plan says."))
        await model.start()
        embedder_port = free_port()
        doryo = deployment(
            root,
            homeserver=hs,
            database_url=pg_url,
            redis_url=f"redis://127.0.0.1:{redis_port}/0",
            model_url=model.base_url,
            embedder_port=embedder_port,
            database={"max_connections": 10},
            **(
                {}
                if args.embeddings == "local"
                else {"embeddings": {"model": "local/fake-embed", "local_url": ""}}
            ),
            **(
                {"bot": {"max_parallel_rooms": args.parallel_rooms}} if args.parallel_rooms else {}
            ),
        )
        bot_id = doryo.bot_id
        try:
            if args.embeddings == "local":
                await doryo.start("embedder", "embedder", embedder_port)
            await doryo.start("receiver", "receiver", hs.as_port)
            await doryo.start("worker-1", "worker")
            print(f"setting up {args.rooms} sessions and {args.rooms} echo rooms…", flush=True)
            alice, bob = await hs.user("alice"), await hs.user("bob")
            sessions, echo_rooms = await set_up(alice, bob, bot_id, args.rooms)
            synapse = psutil.Process(hs.synapse._process.pid)  # type: ignore[union-attr]
            phases: list[Phase] = []
            for rate in rates:
                doryos = [f"doryo ×{n}" for n in worker_counts]
                # A warm-up of each (not counted), then the rounds, echo last again. Synapse's
                # speed may drift over a run (on SQLite in memory the echo's p95 rose ×10): each
                # round begins with the echo and takes the worker counts in another order.
                order = ["echo", doryos[0]]
                for r in range(args.rounds):
                    order += ["echo", *doryos[r % len(doryos) :], *doryos[: r % len(doryos)]]
                order.append("echo")
                for n, name in enumerate(order):
                    if name.startswith("doryo"):
                        await set_workers(doryo, int(name.split("×")[1]))
                    if args.pin:  # the workers just started, and threads started since
                        for process in doryo.processes.values():
                            pin(process.pid, SERVICE_CPU)
                        pin(hs.synapse._process.pid, SYNAPSE_CPU)  # type: ignore[union-attr]
                        pin(echo.pid, SERVICE_CPU)
                    phase = Phase(name, rate, warm_up=n < 2)
                    targets = (
                        [psutil.Process(echo.pid)]
                        if name == "echo"
                        else [psutil.Process(p.pid) for p in doryo.processes.values()]
                    )
                    cpu0, syn0, t0 = cpu_seconds(targets), cpu_seconds([synapse]), time.monotonic()
                    acks0 = await doryo.metrics("receiver", "doryo_transaction_ack_seconds")
                    echo0 = await echo_state(echo_port)
                    asked0 = await asked_of_synapse(doryo)
                    machine0 = busy_seconds()
                    rooms = echo_rooms if name == "echo" else sessions
                    synapse0 = await synapse_metrics(hs) if args.synapse_metrics else None
                    profiler = await profile(args.profile_synapse, hs, n, name, args.seconds)
                    await send_load(phase, [alice, bob], rooms, args.seconds)
                    if profiler is not None:
                        await profiler.wait()
                    if name == "echo":
                        phase.drained = await drained(lambda: echo_idle(echo_port), 60)
                    else:
                        phase.drained = await drained(lambda: doryo_idle(pg_url), 120)
                    elapsed = time.monotonic() - t0
                    acks = await doryo.metrics("receiver", "doryo_transaction_ack_seconds")
                    phase.transactions = acks["_count"] - acks0["_count"]
                    if name != "echo":
                        asked = await asked_of_synapse(doryo)
                        phase.asked_of_synapse = {
                            kind: n - asked0.get(kind, 0) for kind, n in asked.items()
                        }
                    if name == "echo":
                        echoed = await echo_state(echo_port)
                        phase.transactions = echoed["transactions"] - echo0["transactions"]
                        phase.to_receiver = echoed["lags"][len(echo0["lags"]) :]
                    if phase.transactions:
                        phase.ack_ms = (acks["_sum"] - acks0["_sum"]) / phase.transactions * 1000
                    phase.service_cpu = (cpu_seconds(targets) - cpu0) / elapsed * 100
                    phase.synapse_cpu = (cpu_seconds([synapse]) - syn0) / elapsed * 100
                    phase.machine_cpu = (busy_seconds() - machine0) / elapsed * 100
                    await measure(
                        phase,
                        alice,
                        {bot_id, f"@{ECHO}:localhost"},
                        None if name == "echo" else pg_url,
                    )
                    print(("  (warm-up) " if phase.warm_up else "") + phase.report(), flush=True)
                    if synapse0 is not None:
                        spent = where_synapse_spent(synapse0, await synapse_metrics(hs))
                        print(spent, flush=True)
                    if not phase.warm_up:
                        phases.append(phase)
            summarize(phases)
        finally:
            await doryo.stop()
            echo.terminate()
            await echo.wait()
            await hs.close_clients()
            await hs.synapse.stop()
            await model.stop()
            redis.terminate()
            await redis.wait()
            await stop_embedded(pg)
            if synapse_pg is not pg:
                await stop_embedded(synapse_pg)


async def synapse_database(pg: Any) -> dict[str, Any]:
    """A database for Synapse in the embedded PostgreSQL: psycopg2's connection arguments."""
    import asyncpg

    admin = await asyncpg.connect(pg.get_uri())
    try:
        await admin.execute(postgres_database_sql("synapse"))
    finally:
        await admin.close()
    info = pg.get_postmaster_info()  # its socket's directory, or its address; and its port
    return {
        "host": str(info.socket_dir or info.hostname),
        "port": info.port,
        "user": "postgres",
        "dbname": "synapse",
    }


async def set_up(
    alice: MatrixClient, bob: MatrixClient, bot_id: str, count: int
) -> tuple[list[str], list[str]]:
    dm = await alice.create_room(invite=[bot_id], is_direct=True, preset="trusted_private_chat")
    await alice.wait_for(dm, lambda e: e["sender"] == bot_id, timeout=60)
    await command(alice, dm, "!ws create Load", timeout=60)
    for room in list(await invited_rooms(alice)):
        await accept(alice, room)  # the space
    await command(alice, dm, f"!ws invite {bob.user_id}", timeout=60)
    for room in list(await invited_rooms(bob)):
        await accept(bob, room)
    sessions = []
    for n in range(count):
        session = link_target(await command(alice, dm, f"!session start Load {n}", timeout=60))
        await accept(alice, session)
        await accept(bob, session)
        sessions.append(session)
    echo_rooms = []
    for _ in range(count):
        room = await alice.create_room(invite=[f"@{ECHO}:localhost", bob.user_id])
        await accept(bob, room)
        echo_rooms.append(room)
    for room in echo_rooms:  # the echo joins as its transactions come
        deadline = time.monotonic() + 60
        while (
            f"@{ECHO}:localhost"
            not in (await alice.request("GET", f"/v3/rooms/{quote(room)}/joined_members"))[
                "joined"
            ]
        ):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the echo appservice did not join {room}")
            await asyncio.sleep(0.2)
    return sessions, echo_rooms


async def set_workers(doryo: Deployment, count: int) -> None:
    workers = sorted(name for name in doryo.processes if name.startswith("worker"))
    for name in workers[count:]:
        await doryo.stop_one(name)
    for n in range(len(workers) + 1, count + 1):
        await doryo.start(f"worker-{n}", "worker")


async def asked_of_synapse(doryo: Deployment) -> dict[str, float]:
    """The requests Doryo's processes made of Synapse so far, by kind, all processes summed."""
    total: dict[str, float] = {}
    for name in list(doryo.processes):
        for kind, count in (await doryo.by_label(name, "doryo_homeserver_requests_total")).items():
            total[kind] = total.get(kind, 0) + count
    return total


async def echo_state(port: int) -> dict[str, Any]:
    """Replies the echo is still sending, transactions it took so far, and each request's time
    from Synapse to the echo (ms)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/pending") as response,
    ):
        state: dict[str, Any] = await response.json()
        return state


async def echo_idle(port: int) -> bool:
    return (await echo_state(port))["pending"] == 0


async def doryo_idle(database_url: str) -> bool:
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        waiting = await conn.fetchval(
            "SELECT (SELECT count(*) FROM inbox_events WHERE state = 'pending')"
            " + (SELECT count(*) FROM appservice_transactions WHERE events IS NOT NULL)"
        )
    finally:
        await conn.close()
    return bool(waiting == 0)


def summarize(phases: list[Phase]) -> None:
    print(
        "\nsummary: reply p95, the median of each one's phases (their range), and Doryo's"
        " against the echo's"
    )
    for rate in sorted({p.rate for p in phases}):
        at = [p for p in phases if p.rate == rate and p.latencies]
        p95s: dict[str, list[float]] = {}
        for p in at:
            p95s.setdefault(p.name, []).append(pct(p.latencies, 95))
        if "echo" not in p95s:
            continue
        floor = statistics.median(p95s["echo"])
        parts = [
            f"{name} {statistics.median(values):.0f} ms"
            + (f" ({min(values):.0f}–{max(values):.0f})" if len(values) > 1 else "")
            + ("" if name == "echo" else f" ×{statistics.median(values) / floor:.2f}")
            for name, values in p95s.items()
        ]
        print(f"  {rate:>3}/s  " + ";  ".join(parts))
        for kind, of in (("!ping", "ping_latencies"), ("@ask", "ask_latencies")):
            by_name: dict[str, list[float]] = {}
            for p in at:
                by_name.setdefault(p.name, []).append(pct(getattr(p, of) or [0], 95))
            kind_floor = statistics.median(by_name["echo"])
            print(
                f"         {kind:<5} "
                + ";  ".join(
                    f"{name} {statistics.median(values):.0f} ms"
                    + ("" if name == "echo" else f" ×{statistics.median(values) / kind_floor:.2f}")
                    for name, values in by_name.items()
                )
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rooms", type=int, default=50)
    parser.add_argument("--rates", default="10,30", help="messages a second, comma-separated")
    parser.add_argument("--seconds", type=float, default=30, help="of sending, per phase")
    parser.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated")
    parser.add_argument(
        "--rounds", type=int, default=3, help="phases of each at each rate (medians are compared)"
    )
    parser.add_argument(
        "--embeddings",
        choices=("provider", "local"),
        default="provider",
        help="provider: a fast fake at the wire, like the model (what Doryo itself costs);"
        " local: the embedder role with all-MiniLM-L6-v2 (what the model costs on this CPU)",
    )
    parser.add_argument(
        "--synapse-database",
        choices=("postgres", "memory"),
        default="postgres",
        help="postgres: Synapse's database in the embedded PostgreSQL, as in production;"
        " memory: SQLite in memory (Synapse slows as it fills: phases drift)",
    )
    parser.add_argument(
        "--echo-like-doryo",
        nargs="?",
        const="all",
        choices=("all", "ephemeral"),
        help="the echo's registration asks for ephemeral events and device lists, as Doryo's"
        " (all), or for ephemeral events only",
    )
    parser.add_argument(
        "--echo-reads",
        action="store_true",
        help="the echo reads the asker's membership and the power levels before answering an"
        " @ask, as Doryo does to know who may ask",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="Synapse (with a PostgreSQL of its own) and the load on CPU 0, the appservice"
        " (with its PostgreSQL and Redis) on CPU 1",
    )
    parser.add_argument(
        "--profile-synapse",
        metavar="DIR",
        help="record where Synapse spends each phase's sending (py-spy, its raw format: one"
        " file a phase in DIR, to compare the echo's with Doryo's)",
    )
    parser.add_argument(
        "--parallel-rooms",
        type=int,
        help="Doryo's bot.max_parallel_rooms (rooms each process works on at once; default:"
        " config.example.yaml's)",
    )
    parser.add_argument(
        "--synapse-metrics",
        action="store_true",
        help="print, for each phase, where Synapse's time went by its own metrics: CPU and"
        " database time of its background processes and servlets, database time by query",
    )
    parser.add_argument("--echo", nargs=4, metavar=("PORT", "HS", "AS", "HS_TOKEN"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args()
    if args.echo:
        port, homeserver, as_token, hs_token = args.echo
        asyncio.run(run_echo(int(port), homeserver, as_token, hs_token, reads=args.echo_reads))
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
