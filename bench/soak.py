"""A soak: mixed traffic for a while, the bot's resources printed every minute.

    .venv/bin/python bench/soak.py [--minutes 20] [--rate 4]

Two people in five sessions of a workspace write `--rate` messages a second in all: chatter
(remembered), and among it `@ask` questions (one in 10), `!ping` (one in 30), `!remember` (one
in 45) and a small shared document (one in 60). The clients only send (they never sync: their
timelines would grow in this process, which is the bot's). Every minute: the bot process's RSS
and its embedding workers' and Synapse's, asyncio tasks, open files, database connections, events
handled and waiting, memory items, and the two bounded caches a traced run found most of the
Python heap's growth in (asyncpg's prepared statements, at most 100 per connection, and the
replies' thread roots, at most 10,000). At the end: RSS and task counts after the warm-up
(minute 2) against the last minute. Target (issue 20): flat — no growth beyond noise, no
growing task, file or connection counts, no backlog.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import os
import random
import time
import tracemalloc
from collections import Counter
from typing import Any

import psutil
from harness import stack

from bot.core import replies
from tests.fakes.llm_script import Answer
from tests.integration.test_actions import team_with_member
from tests.integration.workspace_helpers import start_session

MB = 1024 * 1024


def rss(process: psutil.Process) -> float:
    try:
        return process.memory_info().rss / MB
    except psutil.Error:
        return 0.0


def embedding_workers(me: psutil.Process) -> list[psutil.Process]:
    """The bot's own child processes: its embedding model's lanes (multiprocessing's spawned
    Pythons) — not the Synapse, PostgreSQL and Redis this benchmark started."""
    found = []
    for child in me.children():
        try:
            if "multiprocessing" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


async def sample(s: Any, me: psutil.Process, synapse: psutil.Process | None) -> dict[str, float]:
    db = s.doryo.ctx.db
    row = await db.fetchrow(
        """
        SELECT count(*) FILTER (WHERE state <> 'pending') AS handled,
               count(*) FILTER (WHERE state = 'pending') AS waiting,
               (SELECT count(*) FROM memory_items) AS memories,
               (SELECT count(*) FROM documents WHERE status = 'done') AS documents
        FROM inbox_events
        """
    )
    return {
        "rss": rss(me),
        "workers": sum(rss(c) for c in embedding_workers(me)),
        "synapse": rss(synapse) if synapse is not None else 0.0,
        "tasks": len(asyncio.all_tasks()),
        "files": me.num_fds(),
        "connections": db.get_size(),
        "handled": row["handled"],
        "waiting": row["waiting"],
        "memories": row["memories"],
        "documents": row["documents"],
        "statements": statements_cached(db),
        "roots": len(replies._ROOTS),
    }


def statements_cached(pool: Any) -> int:
    """Prepared statements asyncpg keeps per connection (bounded by its statement_cache_size,
    100): a cache that fills, not a leak — the traced run found most of the heap's growth there."""
    total = 0
    for holder in pool._holders:  # asyncpg's own, read for this count only
        conn = holder._con
        if conn is not None and not conn.is_closed():
            total += len(conn._stmt_cache)
    return total


def show(minute: int, m: dict[str, float]) -> None:
    print(
        f"  min {minute:3d}  bot RSS {m['rss']:7.1f} MB  workers {m['workers']:7.1f} MB  "
        f"synapse {m['synapse']:7.1f} MB  tasks {m['tasks']:4.0f}  files {m['files']:4.0f}  "
        f"db conns {m['connections']:3.0f}  events {m['handled']:6.0f} (+{m['waiting']:.0f} "
        f"waiting)  memories {m['memories']:6.0f}  documents {m['documents']:4.0f}  "
        f"statements {m['statements']:4.0f}  thread roots {m['roots']:5.0f}",
        flush=True,
    )


def growth(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, top: int = 25) -> None:
    """Where the Python heap grew between two snapshots, largest first."""
    print(f"Python allocations that grew most since the warm-up (tracemalloc, top {top}):")
    for stat in after.compare_to(before, "traceback")[:top]:
        # The allocation's site, then its callers: the caller usually names the holder.
        where = " ← ".join(
            f"{frame.filename.split('site-packages/')[-1]}:{frame.lineno}"
            for frame in reversed(stat.traceback)
        )
        print(f"  {stat.size_diff / 1024:+9.1f} KiB  {stat.count_diff:+7d} blocks  {where}")


def holders(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, top: int = 6) -> None:
    """Who keeps what grew most: the containers (and their own holders) referring to live
    objects allocated at the top growth sites."""
    sites = {
        (stat.traceback[-1].filename, stat.traceback[-1].lineno): Counter[str]()
        for stat in after.compare_to(before, "lineno")[:top]
    }

    def site_of(obj: object) -> tuple[str, int] | None:
        found = tracemalloc.get_object_traceback(obj)
        if found is None:
            return None
        key = (found[-1].filename, found[-1].lineno)
        return key if key in sites else None

    def name(obj: object) -> str:
        kind = type(obj).__qualname__
        if isinstance(obj, dict):
            # A dict is most often an instance's __dict__: name the instance.
            owners = [o for o in gc.get_referrers(obj) if getattr(o, "__dict__", None) is obj]
            if owners:
                return f"{type(owners[0]).__module__}.{type(owners[0]).__qualname__}.__dict__"
        return f"{type(obj).__module__}.{kind}"

    up: dict[str, set[str]] = {}
    named: Counter[str] = Counter()
    every = gc.get_objects()
    for container in every:
        for referent in gc.get_referents(container):
            key = site_of(referent)
            if key is None:
                continue
            # gc.get_referrers walks every object: for the first few of each type only.
            kind = f"{type(container).__module__}.{type(container).__qualname__}"
            named[kind] += 1
            label = name(container) if named[kind] <= 3 else kind
            sites[key][label] += 1
            if label not in up:
                # One level up, for the first of each kind: who holds the holder.
                up[label] = {
                    f"{type(o).__module__}.{type(o).__qualname__}"
                    for o in gc.get_referrers(container)
                    if o is not every
                }
            break
    print(f"Who holds what was allocated at the top {top} growth sites:")
    for (filename, lineno), counts in sites.items():
        print(f"  {filename.split('site-packages/')[-1]}:{lineno}")
        for label, count in counts.most_common(5):
            print(f"    {count:7d}  {label}  ⟵ {', '.join(sorted(up[label])[:4])}")


async def main(minutes: float, rate: float, trace: bool) -> None:
    async with stack(memory=True) as s:
        s.model.default = Answer("The soak's model answers briefly [1].")
        team, first, bob = await team_with_member(s.hs, s.doryo)
        sessions = [first] + [await start_session(team, f"Topic {n}") for n in range(4)]
        for room in sessions[1:]:
            await bob.join(room)
        people = [team.alice, bob]
        me = psutil.Process(os.getpid())
        synapse_process = s.hs.synapse._process
        synapse = psutil.Process(synapse_process.pid) if synapse_process else None
        rng = random.Random(7)
        counter = itertools.count(1)
        samples: list[dict[str, float]] = []
        deadline = time.monotonic() + minutes * 60
        next_sample = time.monotonic()
        print(f"Soak: {minutes:g} min, {rate:g} messages/s in 5 sessions, 2 people")
        in_flight: set[asyncio.Task[Any]] = set()

        async def send_one(n: int) -> None:
            person = people[n % 2]
            room = sessions[rng.randrange(len(sessions))]
            if n % 60 == 0:
                text = f"# Notes {n}\nThe soak decided item {n} goes to runner {n % 7}.\n"
                await person.send_file(room, f"notes-{n}.md", text.encode(), "text/markdown")
            elif n % 45 == 0:
                await person.send_text(room, f"!remember soak fact {n}: budget line {n % 13}")
            elif n % 30 == 0:
                await person.send_text(room, "!ping")
            elif n % 10 == 0:
                await person.send_text(room, f"@ask which runner handles item {n - 7}?")
            else:
                await person.send_text(
                    room, f"Item {n} goes to runner {n % 7} after review {n % 11}."
                )

        warm_snapshot: tracemalloc.Snapshot | None = None
        while time.monotonic() < deadline:
            if time.monotonic() >= next_sample:
                # The fake model keeps every request it got: the benchmark's memory, in the
                # bot's process (the first traced run found it the largest growth).
                s.model.requests.clear()
                samples.append(await sample(s, me, synapse))
                show(len(samples) - 1, samples[-1])
                next_sample += 60
                if trace and len(samples) == 2:
                    tracemalloc.start(8)
                elif trace and len(samples) == 3:
                    warm_snapshot = tracemalloc.take_snapshot()
            if len(in_flight) < 20:
                task = asyncio.create_task(send_one(next(counter)))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            await asyncio.sleep(1 / rate)
        await asyncio.gather(*in_flight)
        await s.doryo.idle(300)
        await s.doryo.ctx.documents.idle(300)
        samples.append(await sample(s, me, synapse))
        show(len(samples) - 1, samples[-1])
        warm = samples[min(2, len(samples) - 1)]
        last = samples[-1]
        span = max(1, len(samples) - 1 - min(2, len(samples) - 1))
        print("After the warm-up (minute 2) → the end:")
        for key in ("rss", "workers", "synapse"):
            slope = (last[key] - warm[key]) / span
            print(f"  {key:<8} {warm[key]:7.1f} → {last[key]:7.1f} MB  ({slope:+.2f} MB/min)")
        for key in ("tasks", "files", "connections"):
            print(f"  {key:<8} {warm[key]:7.0f} → {last[key]:7.0f}")
        print(f"  waiting events at the end: {last['waiting']:.0f} (target 0)")
        if warm_snapshot is not None:
            after = tracemalloc.take_snapshot()
            growth(warm_snapshot, after)
            holders(warm_snapshot, after)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--rate", type=float, default=4, help="messages a second, in all")
    parser.add_argument(
        "--trace",
        action="store_true",
        help="trace Python allocations from minute 1 and print where they grew since minute 2",
    )
    args = parser.parse_args()
    asyncio.run(main(args.minutes, args.rate, args.trace))
