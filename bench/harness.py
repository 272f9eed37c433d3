"""What every benchmark starts: embedded PostgreSQL, a private Redis, Synapse and the bot, all on
127.0.0.1 under a temporary directory, torn down at the end. Numbers only make sense as medians
and ratios: the machine is shared."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.app import Doryo  # noqa: E402
from bot.core.config import Config  # noqa: E402
from bot.core.embedded_pg import start_embedded, stop_embedded  # noqa: E402
from bot.memory import LocalEmbedder  # noqa: E402
from synapse_dev.server import free_port  # noqa: E402
from tests.conftest import Homeserver, make_config, start_homeserver  # noqa: E402
from tests.fakes.llm_script import Answer  # noqa: E402
from tests.fakes.openai_server import FakeOpenAI  # noqa: E402


def pct(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def line(name: str, values: Sequence[float], baseline: Sequence[float] | None = None) -> str:
    p50, p95 = statistics.median(values), pct(values, 95)
    text = f"  {name:<40} p50 {p50:8.2f} ms   p95 {p95:8.2f} ms"
    if baseline:
        b50 = statistics.median(baseline)
        text += f"   ×{p50 / b50:5.2f} of baseline p50 ({b50:.2f} ms)"
    return text


@dataclass
class Stack:
    hs: Homeserver
    doryo: Doryo
    """The process that takes the transactions: role all, or the receiver of `workers`."""
    config: Config
    model: FakeOpenAI
    workers: list[Doryo]

    async def idle(self, timeout: float) -> None:
        for doryo in (self.doryo, *self.workers):
            await doryo.idle(timeout)


@contextlib.asynccontextmanager
async def stack(
    *,
    memory: bool = False,
    model_class: type[FakeOpenAI] = FakeOpenAI,
    workers: int = 0,
    **sections: Any,
) -> AsyncIterator[Stack]:
    """`workers`: 0, one process of role all; more, a receiver and that many workers (in this
    Python process, each a Doryo of its own)."""
    with tempfile.TemporaryDirectory(prefix="doryo-bench-") as tmp:
        root = Path(tmp)
        pg_url, pg = await start_embedded(root / "pg")
        redis_port = free_port()
        redis = await asyncio.create_subprocess_exec(
            "redis-server",
            "--port",
            str(redis_port),
            "--save",
            "",
            "--appendonly",
            "no",
            stdout=asyncio.subprocess.DEVNULL,
        )
        hs = await start_homeserver(root / "synapse")
        model = model_class(default=Answer("The benchmark model answers briefly."))
        await model.start()
        embedder = LocalEmbedder("all-minilm-l6-v2") if memory else None
        config = make_config(
            hs, pg_url, f"redis://127.0.0.1:{redis_port}/0", root, model.base_url, **sections
        )
        doryo = Doryo(config, embedder=embedder, role="receiver" if workers else "all")
        handlers = [
            Doryo(config, embedder=embedder, role="worker", port=free_port())
            for _ in range(workers)
        ]
        await doryo.start()
        for worker in handlers:
            await worker.start()
        try:
            for process in (doryo, *handlers):
                await asyncio.wait_for(process.connected.wait(), 60)
            yield Stack(hs, doryo, config, model, handlers)
        finally:
            for worker in handlers:
                await worker.stop()
            await doryo.stop()
            await hs.close_clients()
            await hs.synapse.stop()
            await model.stop()
            if embedder is not None:
                await embedder.aclose()
            redis.terminate()
            await redis.wait()
            await stop_embedded(pg)
