"""What the LLM router adds to a model call, next to the official SDK called directly, against the
same fake OpenAI-compatible server in the same run.

    .venv/bin/python bench/llm_router.py [--rounds 300]

Measured, interleaved (baseline, router, baseline, ...) so that drift hits both alike:
1. per call: `await router.chat(...)` vs `await client.chat.completions.create(...)`;
2. per streamed first delta: the first text delta from `router.stream(...)` vs the first
   content chunk of `client.chat.completions.create(stream=True)`.
The router runs as in production: rate limits checked in Redis (one Lua script), the monthly
budget read from PostgreSQL, every call recorded in llm_usage. The "usage only" rows turn limits
and budgets off (the call is still recorded). It starts its own embedded PostgreSQL and Redis.
Targets (issue 4): < 2 ms added per call, < 5 % on time to first delta, judged on the median of
paired differences (each router sample minus the baseline sample taken next to it, in
alternating order); medians and p95 of each side are printed too. The machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, aclosing
from pathlib import Path
from typing import Any

import openai
from redis.asyncio import Redis
from redis.exceptions import RedisError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.core import db  # noqa: E402
from bot.core.config import LlmConfig  # noqa: E402
from bot.core.embedded_pg import start_embedded, stop_embedded  # noqa: E402
from bot.llm import CallContext, ChatRequest, LLMRouter, Message, TextDelta  # noqa: E402
from synapse_dev.server import free_port  # noqa: E402
from tests.fakes.llm_script import Answer, Tokens  # noqa: E402
from tests.fakes.openai_server import FakeOpenAI  # noqa: E402

ANSWER = " ".join(f"word{i}" for i in range(40))
MESSAGES = [
    Message.system("You are Doryo, an AI colleague in a team's Matrix workspace."),
    Message.user("What did we decide about the database for the memory? " * 4),
]
CONTEXT = CallContext(
    agent="assistant", blueprint_version=1, workspace_id="ws1", room_id="!r:hs", user_id="@a:hs"
)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def line(name: str, values: list[float], baseline: list[float] | None = None) -> str:
    p50, p95 = statistics.median(values), pct(values, 95)
    text = f"  {name:<36} p50 {p50:7.3f} ms   p95 {p95:7.3f} ms"
    if baseline:
        b50, b95 = statistics.median(baseline), pct(baseline, 95)
        text += f"   +{p50 - b50:6.3f} ms p50 (+{p95 - b95:6.3f} p95)   ×{p50 / b50:5.3f}"
    return text


def paired(values: list[float], baseline: list[float]) -> list[float]:
    return [v - b for v, b in zip(values, baseline, strict=True)]


Sample = tuple[float, float]
"""(wall ms, CPU ms of this thread — the event loop, fake server included, for both sides)."""


async def timed(fn: Callable[[], Awaitable[object]]) -> Sample:
    wall, cpu = time.perf_counter(), time.thread_time()
    await fn()
    return (time.perf_counter() - wall) * 1000, (time.thread_time() - cpu) * 1000


async def start_redis(workdir: Path) -> tuple[str, asyncio.subprocess.Process]:
    binary = shutil.which("redis-server")
    if not binary:
        raise SystemExit("redis-server is missing: scripts/install puts it in place")
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        binary,
        *("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
        *("--dir", str(workdir)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = Redis.from_url(url)
    try:
        async with asyncio.timeout(10):
            while True:
                try:
                    await client.ping()
                    break
                except (RedisError, OSError):
                    await asyncio.sleep(0.05)
    finally:
        await client.aclose()
    return url, process


def config(base_url: str, *, limits: bool, budgets: bool) -> LlmConfig:
    big = {"requests_per_minute": 1_000_000, "tokens_per_minute": 1_000_000_000}
    off = {"requests_per_minute": 0, "tokens_per_minute": 0}
    usd = 1000 if budgets else 0
    return LlmConfig.model_validate(
        {
            "providers": {"local": {"kind": "openai", "base_url": base_url, "api_key": ""}},
            "default_model": "local/llama3.1",
            "fallbacks": [],
            "rate_limits": {s: big if limits else off for s in ("agent", "workspace", "user")},
            "budgets": {"workspace_monthly_usd": usd, "agent_monthly_usd": usd},
        }
    )


MODES = {
    "router: usage only": {"limits": False, "budgets": False},
    "router: + budgets": {"limits": False, "budgets": True},
    "router: + budgets + rate limits": {"limits": True, "budgets": True},
}


async def run(rounds: int) -> None:
    async with AsyncExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="doryo-bench-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        url, pg = await start_embedded(workdir / "pg")
        stack.push_async_callback(stop_embedded, pg)
        redis_url, redis_process = await start_redis(workdir)

        async def stop_redis() -> None:
            redis_process.terminate()
            await redis_process.wait()

        stack.push_async_callback(stop_redis)
        pool = await db.connect(url, min_size=2, max_size=4)
        stack.push_async_callback(pool.close)
        redis = Redis.from_url(redis_url)
        stack.push_async_callback(redis.aclose)
        server = FakeOpenAI(default=Answer(ANSWER, usage=Tokens(80, 40)))
        await server.start()
        stack.push_async_callback(server.stop)
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="bench", max_retries=0)
        stack.push_async_callback(client.close)
        routers = {}
        for mode, flags in MODES.items():
            router = LLMRouter(
                config(server.base_url, **flags), redis=redis, db=pool, key_prefix="b:"
            )
            stack.push_async_callback(router.close)
            routers[mode] = router
        await measure(rounds, client, routers, pool)


async def measure(
    rounds: int, client: openai.AsyncOpenAI, routers: dict[str, LLMRouter], pool: Any
) -> None:
    raw = [{"role": m.role, "content": m.content} for m in MESSAGES]
    request = ChatRequest(MESSAGES, context=CONTEXT)

    async def sdk_call() -> Sample:
        async def call() -> None:
            await client.chat.completions.create(model="llama3.1", messages=raw)  # type: ignore[arg-type]

        return await timed(call)

    async def sdk_first_delta() -> Sample:
        wall, cpu = time.perf_counter(), time.thread_time()
        first: Sample | None = None
        stream = await client.chat.completions.create(
            model="llama3.1",
            messages=raw,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = (time.perf_counter() - wall) * 1000, (time.thread_time() - cpu) * 1000
        assert first is not None
        return first

    async def router_call(router: LLMRouter) -> Sample:
        return await timed(lambda: router.chat(request))

    async def router_first_delta(router: LLMRouter) -> Sample:
        wall, cpu = time.perf_counter(), time.thread_time()
        first: Sample | None = None
        async with aclosing(router.stream(request)) as events:
            async for event in events:
                if first is None and isinstance(event, TextDelta):
                    first = (time.perf_counter() - wall) * 1000, (time.thread_time() - cpu) * 1000
        assert first is not None
        return first

    bookkeeping: list[float] = []

    async def settled(router: LLMRouter) -> None:
        # The usage row and token count are written in the background, off the caller's path:
        # wait for them outside the timings so that they do not land in the next measurement.
        bookkeeping.append((await timed(router.flush))[0])

    for _ in range(max(30, rounds // 10)):  # warm up connections and caches
        await sdk_call()
        await sdk_first_delta()
        for router in routers.values():
            await router_call(router)
            await router_first_delta(router)
            await router.flush()

    # Paired samples: each router measurement next to a baseline one, in the same state (the
    # previous call's bookkeeping flushed), in alternating order (AB BA), so that drift, a busy
    # machine and whatever follows a flush hit both alike.
    samples: dict[str, dict[str, list[Sample]]] = {
        kind: {mode: [] for mode in routers}
        for kind in ("base_call", "call", "base_first", "first")
    }
    for i in range(rounds):
        for mode, router in routers.items():
            pairs = [
                (("base_call", sdk_call), ("call", lambda r=router: router_call(r))),
                (
                    ("base_first", sdk_first_delta),
                    ("first", lambda r=router: router_first_delta(r)),
                ),
            ]
            for a, b in pairs:
                for kind, fn in (a, b) if i % 2 else (b, a):
                    samples[kind][mode].append(await fn())  # type: ignore[operator]
                    if not kind.startswith("base"):
                        await settled(router)

    def walls(values: list[Sample]) -> list[float]:
        return [w for w, _ in values]

    def cpus(values: list[Sample]) -> list[float]:
        return [c for _, c in values]

    recorded = await pool.fetchval("SELECT count(*) FROM llm_usage")
    print(f"LLM router overhead, {rounds} rounds, fake OpenAI server on 127.0.0.1")
    verdicts = []
    for title, base_kind, kind in (
        ("per call (non-streamed):", "base_call", "call"),
        ("time to first delta:", "base_first", "first"),
    ):
        print(title)
        every_base = [w for values in samples[base_kind].values() for w, _ in values]
        print(line("SDK directly (baseline)", every_base))
        for mode in routers:
            base, mine = samples[base_kind][mode], samples[kind][mode]
            print(line(mode, walls(mine), walls(base)))
            wall_added = statistics.median(paired(walls(mine), walls(base)))
            cpu_added = statistics.median(paired(cpus(mine), cpus(base)))
            print(
                f"  {'':<36} paired: +{wall_added:.3f} ms wall, +{cpu_added:.3f} ms CPU "
                f"(baseline CPU p50 {statistics.median(cpus(base)):.3f} ms)"
            )
            verdicts.append((mode, kind, wall_added, statistics.median(walls(base))))
    print(line("background bookkeeping (flush)", bookkeeping))
    print(f"({recorded} calls recorded in llm_usage)")
    print("targets, on the paired wall-clock differences (robust to drift on a busy machine):")
    for mode, kind, added, base in verdicts:
        if kind == "call":
            ok = "met" if added < 2 else "MISSED"
            print(f"  {mode}: +{added:.3f} ms per call (< 2 ms: {ok})")
        else:
            ratio = added / base
            ok = "met" if ratio < 0.05 else "MISSED"
            print(f"  {mode}: {ratio * 100:+.1f} % on first delta (< 5 %: {ok})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=300)
    asyncio.run(run(parser.parse_args().rounds))
