"""Transaction-ack latency and the !ping round trip, each next to a baseline from the same run.

    .venv/bin/python bench/transactions.py [--rounds 300] [--pings 60]

1. Ack: PUT /_matrix/app/v1/transactions/{id} to the running bot, 1 and 100 events a
   transaction (events the router ignores, so only the receive path is measured: token check,
   JSON, one INSERT into PostgreSQL, 200). Baseline: the same requests to a bare aiohttp handler
   that parses the JSON and answers 200 without storing anything.
2. Round trip: a person sends `!ping` and waits (long-polling /sync) for the bot's answer.
   Baseline: the same person sends a message and waits for the answer of a plain client (an
   echo that long-polls /sync and replies at once) on the same Synapse.
Targets (issue 2): ack p95 < 10 ms for 100 events; bot overhead on the round trip < 10 %.
Medians and ratios, not single timings: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.app import Doryo  # noqa: E402
from bot.core.embedded_pg import start_embedded, stop_embedded  # noqa: E402
from bot.memory import LocalEmbedder  # noqa: E402
from synapse_dev.server import free_port  # noqa: E402
from tests.client import MatrixClient, replies_to  # noqa: E402
from tests.conftest import Homeserver, make_config, start_homeserver  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def line(name: str, values: list[float], baseline: list[float] | None = None) -> str:
    p50, p95 = statistics.median(values), pct(values, 95)
    text = f"  {name:<34} p50 {p50:7.2f} ms   p95 {p95:7.2f} ms"
    if baseline:
        b50 = statistics.median(baseline)
        text += f"   ×{p50 / b50:5.2f} of baseline p50 ({b50:.2f} ms)"
    return text


def transaction(size: int) -> dict[str, Any]:
    return {
        "events": [
            {
                "event_id": f"${uuid.uuid4().hex}",
                "room_id": "!bench:localhost",
                "type": "org.doryo.bench",
                "sender": "@bench:localhost",
                "origin_server_ts": int(time.time() * 1000),
                "content": {"n": n, "body": "x" * 200},
            }
            for n in range(size)
        ]
    }


async def time_puts(url: str, token: str, size: int, rounds: int) -> list[float]:
    timings = []
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        for _ in range(10):  # warm up connections and caches
            async with session.put(
                f"{url}/_matrix/app/v1/transactions/w{uuid.uuid4().hex}", json=transaction(size)
            ) as response:
                await response.read()
        for _ in range(rounds):
            body = transaction(size)
            started = time.perf_counter()
            async with session.put(
                f"{url}/_matrix/app/v1/transactions/{uuid.uuid4().hex}", json=body
            ) as response:
                await response.read()
                assert response.status == 200
            timings.append((time.perf_counter() - started) * 1000)
    return timings


async def bare_server() -> tuple[web.AppRunner, str]:
    async def handler(request: web.Request) -> web.Response:
        await request.json()
        return web.json_response({})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_put("/_matrix/app/v1/transactions/{txn}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def round_trips(
    alice: MatrixClient, room: str, body: str, count: int, answerer: str
) -> list[float]:
    timings = []
    await alice.sync_once(timeout_ms=0)
    for _ in range(count):
        started = time.perf_counter()
        event_id = await alice.send_text(room, body)
        await alice.wait_for(
            room, lambda e, i=event_id: replies_to(e) == i and e["sender"] == answerer, timeout=30
        )
        timings.append((time.perf_counter() - started) * 1000)
    return timings


async def echo(client: MatrixClient, room: str, stop: asyncio.Event) -> None:
    """A plain client: long-polls /sync and answers every "hello" at once."""
    await client.sync_once(timeout_ms=0)
    seen = len(client.timeline.get(room, []))
    while not stop.is_set():
        await client.sync_once(timeout_ms=1000)
        events = client.timeline.get(room, [])
        for event in events[seen:]:
            content = event.get("content", {})
            if event["type"] == "m.room.message" and content.get("body") == "hello":
                await client.send_text(
                    room,
                    "echo",
                    **{"m.relates_to": {"m.in_reply_to": {"event_id": event["event_id"]}}},
                )
        seen = len(events)


async def main(rounds: int, pings: int) -> None:
    with tempfile.TemporaryDirectory(prefix="doryo-bench-") as tmp:
        root = Path(tmp)
        pg_url, pg = await start_embedded(root / "pg")
        redis = await asyncio.create_subprocess_exec(
            "redis-server",
            "--port",
            str(redis_port := free_port()),
            "--save",
            "",
            "--appendonly",
            "no",
            stdout=asyncio.subprocess.DEVNULL,
        )
        hs: Homeserver = await start_homeserver(root / "synapse")
        config = make_config(hs, pg_url, f"redis://127.0.0.1:{redis_port}/0", root)
        doryo = Doryo(config)
        await doryo.start()
        await asyncio.wait_for(doryo.connected.wait(), 30)
        if doryo.ctx.memory is not None and isinstance(doryo.ctx.memory.embedder, LocalEmbedder):
            await doryo.ctx.memory.embedder.load()  # measure the bot as it runs, not as it starts
        bare, bare_url = await bare_server()
        try:
            token = config.appservice.hs_token.get_secret_value()
            bot_url = f"http://127.0.0.1:{config.appservice.port}"
            print(f"Transaction ack ({rounds} transactions each)")
            for size in (1, 100):
                base = await time_puts(bare_url, token, size, rounds)
                ours = await time_puts(bot_url, token, size, rounds)
                print(line(f"bare aiohttp, {size} event(s)", base))
                print(line(f"Doryo, {size} event(s)", ours, base))
            # Every acked event is also handled (the router ignores them): let that finish.
            drain_start = time.perf_counter()
            await doryo.idle(600)
            drained = time.perf_counter() - drain_start
            print(f"  then handling the {rounds * 101} events took {drained:.1f} s more")

            alice, bob = await hs.user("alice"), await hs.user("bob")
            room = await alice.create_room(invite=[config.bot_user_id, bob.user_id])
            await bob.join(room)
            await alice.wait_for(
                room,
                lambda e: e["sender"] == config.bot_user_id and e["type"] == "m.room.message",
                timeout=30,
            )
            stop = asyncio.Event()
            echo_task = asyncio.create_task(echo(bob, room, stop))
            # Interleave the two so that drift in the machine's load hits both alike.
            base_rt, ping_rt = [], []
            for _ in range(pings // 10):
                base_rt += await round_trips(alice, room, "hello", 10, bob.user_id)
                ping_rt += await round_trips(alice, room, "!ping", 10, config.bot_user_id)
            stop.set()
            await echo_task
            print(f"Round trip, person → answer seen in /sync ({len(ping_rt)} each)")
            print(line("plain echo client (baseline)", base_rt))
            print(line("Doryo !ping", ping_rt, base_rt))
            overhead = statistics.median(ping_rt) / statistics.median(base_rt) - 1
            print(f"  bot overhead on the round trip: {overhead * 100:+.1f} % (target < 10 %)")
            await hs.close_clients()
        finally:
            await bare.cleanup()
            await doryo.stop()
            await hs.synapse.stop()
            redis.terminate()
            await redis.wait()
            await stop_embedded(pg)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--pings", type=int, default=60)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.pings))
