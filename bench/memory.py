"""Memory benchmark: query latency (p50/p95) and recall@10 at 10k, 100k and 1M stored items,
indexing throughput through the real indexer, and the memory part of an @ask.

    .venv/bin/python bench/memory.py          # 10k, 100k and 1M (1M takes a while)
    .venv/bin/python bench/memory.py --sizes 10000,100000

Its own embedded PostgreSQL (bot/core/embedded_pg.py) under a temporary directory, tuned the way a
host with this much memory would be (shared_buffers, maintenance_work_mem for the HNSW build).

The data are synthetic but clustered like chat: 20,000 sentences generated from templates
(people, projects, systems, incidents, dates, numbers; --base-sentences) are embedded for real
with the local model; stored items are copies of them with one detail changed in the text and a
small perturbation of the vector (so every item has a text for full-text search and a vector
near what its text means; --perturbation mix or noise, see perturb()). Questions are other
generated sentences, embedded for real.

Workspaces at each size: "big" holds half the items, "mid" a tenth, "edge" and "below" (from
100k on) sit just above and just below memory.exact_search_below, where Memory switches from an
exact search to an HNSW index of the workspace's own (the hardest case of each path), "gap" (at
1M) where it would switch to the shared index without one, the rest are small workspaces of 500
items. Their rows are interleaved at random, as on a shared server. After each load the HNSW
index is built, then the workspaces' own indexes (Memory.index_workspaces, as the bot does); each
workspace is queried with the strategy Memory picks for it.

Numbers printed: p50 and p95 in ms of sequential queries after a warm-up; recall@10 of the
vector retriever (the first 10 of its candidates, with the production settings) against an exact
search of the same workspace; and, as the baseline, the exact search's own latency.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.core import db  # noqa: E402
from bot.core.config import MemoryConfig  # noqa: E402
from bot.core.embedded_pg import start_embedded, stop_embedded  # noqa: E402
from bot.memory import LocalEmbedder, Memory, MemoryInput  # noqa: E402
from bot.memory.embeddings import Vectors  # noqa: E402
from bot.memory.indexes import EXACT_SEARCH_FACTOR  # noqa: E402
from bot.memory.records import Candidate  # noqa: E402
from bot.memory.service import PEOPLE_READ  # noqa: E402
from bot.memory.sql import VECTORS, hnsw_index_sql, own_index_name  # noqa: E402
from bot.memory.store import MemoryStore  # noqa: E402

SMALL_WORKSPACE = 500
BASE_SENTENCES = 20_000
QUERIES = 200
WARMUP = 20
# How a stored item's vector is made from its base sentence's (see perturb()).
MIX = (0.1, 0.5)  # weight of another sentence's vector, drawn per item ("mix")
NOISE = (0.005, 0.02)  # per-dimension sigma of Gaussian noise, drawn per item

# -- the generated team chat -------------------------------------------------------------------

PEOPLE = (
    "Alice Bilal Chen Dana Emil Farah Greta Priya Omar Lena Yuki Marco Sofia Jonas Amara "
    "Ravi Ines Tomas Mei Hugo Nora Kofi Elif Sven"
).split()
PROJECTS = [
    "checkout",
    "onboarding",
    "search",
    "billing",
    "the sync service",
    "the mobile app",
    "the web planner",
    "notifications",
    "the data pipeline",
    "the admin dashboard",
    "the API gateway",
    "recommendations",
    "map tiles",
    "offline mode",
    "analytics",
    "the auth service",
    "the export to PDF",
    "the pricing page",
    "referrals",
    "invoices",
]
SYSTEMS = [
    "Postgres",
    "Redis",
    "Kubernetes",
    "the CDN",
    "the load balancer",
    "Kafka",
    "the cron runner",
    "S3",
    "Elasticsearch",
    "the build server",
    "Sentry",
    "Grafana",
    "the mail relay",
    "the payment provider",
    "the feature flag service",
]
PROBLEMS = [
    "is timing out",
    "ran out of disk",
    "is returning 502s",
    "has high latency",
    "dropped connections",
    "restarted twice",
    "is throttling requests",
    "lost its replica",
    "is out of memory",
    "failed its health checks",
]
CAUSES = [
    "a bad deploy",
    "a missing index",
    "an expired certificate",
    "a config typo",
    "a traffic spike",
    "a memory leak",
    "a slow migration",
    "a DNS change",
    "a full queue",
    "a noisy neighbour",
    "a retry storm",
    "a clock skew",
]
ACTIONS = [
    "review",
    "ship",
    "test",
    "refactor",
    "document",
    "migrate",
    "benchmark",
    "roll back",
    "deploy",
    "design",
    "estimate",
    "split up",
]
OBJECTS = [
    "the release notes",
    "the pull request",
    "the migration",
    "the dashboard",
    "the invoice flow",
    "the onboarding screens",
    "the API docs",
    "the load test",
    "the retry logic",
    "the on-call runbook",
    "the backup job",
    "the rate limiter",
    "the cache layer",
    "the email templates",
    "the feature flag",
]
DAYS = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "next week",
    "tomorrow",
    "the end of the sprint",
    "the 14th",
    "March 3",
    "after the freeze",
    "the offsite",
]
COMPANIES = [
    "Nordwind",
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Vandelay",
    "Stark",
    "Wayne",
    "Tyrell",
]
ROLES = ["backend", "mobile", "design", "data", "support", "sales"]
FOODS = ["falafel", "ramen", "pizza", "thai", "burrito", "salad"]

# Sentence cores, with openers and tails around them: chat is varied in shape, and a benchmark on
# twenty sentence shapes alone would be far more clustered (and harder for HNSW) than real chat.
TEMPLATES = [
    "{person} will {action} {object} for {project} by {day}.",
    "{system} {problem} because of {cause}, {person} is looking into it.",
    "can someone {action} {object}? It blocks {project}.",
    "we decided to move {project} to {system} after {day}.",
    "{object} for {project} slipped to {day}.",
    "customer {company} asked about {project}, they want it by {day}.",
    "budget for {project} is {number}k EUR, approved by {person}.",
    "ticket FW-{ticket}: {system} {problem} in {project}.",
    "standup: {person} is on {project}, {person2} on {object}.",
    "{object} needs a {action} before {day}.",
    "latency for {project} went from {number}0 ms to {number2} ms after {person} changed "
    "{object}.",
    "design review for {project} on {day}, {person} presents.",
    "I think {project} should use {system} instead.",
    "postmortem for INC-{ticket} is up, root cause was {cause} in {system}.",
    "lunch? {person} suggests the {food} place.",
    "{number} candidates for the {role} role so far, {person} runs the interviews.",
    "the {company} contract renews on {day} at {number}k EUR per year.",
    "{person} and {person2} paired on {object} for {project}, it's merged.",
    "incident INC-{ticket} is resolved, {system} is healthy again.",
    "please don't {action} {object} until {person} signs off.",
    "who owns {object} now that {person} moved to {project}?",
    "the {role} team wants {project} to ship before {day}.",
    "{company} churned, they said {project} was too slow for them.",
    "I'm out {day}, {person2} covers {project} for me.",
    "we spent {number}k EUR on {system} last month, mostly for {project}.",
    "the demo of {project} for {company} went well, they asked for {object}.",
    "{person} is sick today, {object} will be late.",
    "on-call this week is {person}, escalate {system} issues to {person2}.",
    "{system} upgrade is scheduled for {day}, expect a short downtime.",
    "is anyone else seeing {system} {problem}?",
    "{project} metrics: {number}% of users finished the flow this week.",
    "the retro for {project} is on {day}, bring your notes.",
    "we rolled back {project} because {system} {problem}.",
    "{person} proposes we drop {object} and focus on {project}.",
    "the new hire for the {role} role starts {day}, {person} is their buddy.",
    "docs for {object} are outdated, {person} will fix them {day}.",
    "{company} reported a bug in {project}: ticket FW-{ticket}.",
    "feature flag for {project} is at {number}% of users now.",
    "we need a decision on {project} by {day}, {person} has the final say.",
    "{person} found {cause} behind the flaky tests in {project}.",
]
OPENERS = [
    "",
    "",
    "",
    "Heads-up: ",
    "Quick update: ",
    "FYI ",
    "So ",
    "Btw ",
    "Honestly, ",
    "Reminder: ",
    "@{person2} ",
    "Looks like ",
    "Just checked: ",
    "Good news: ",
    "Bad news: ",
    "Small thing: ",
    "Update: ",
    "Hey all, ",
]
TAILS = [
    "",
    "",
    "",
    " Thoughts?",
    " Will update here.",
    " cc @{person2}",
    " (see FW-{ticket})",
    " Sorry for the noise.",
    " Let's discuss at standup.",
    " 🙏",
    " ETA {day}.",
    " Not urgent.",
    " This blocks us.",
    " Any objections?",
    " I'll write it up.",
    " Thanks {person2}!",
    " More in the doc.",
    " 👍",
]
QUESTIONS = [
    "When is {object} for {project} due?",
    "Why did {system} go down?",
    "Who is working on {project}?",
    "What did we decide about {project}?",
    "How much budget does {project} have?",
    "What was the root cause of INC-{ticket}?",
    "What is blocking {project}?",
    "What did {company} ask for?",
    "How fast is {project} now?",
    "Who presents the {project} design review?",
    "Is {system} healthy again?",
    "How many candidates applied for the {role} job?",
]


def slots(rng: random.Random) -> dict[str, str]:
    return {
        "person": rng.choice(PEOPLE),
        "person2": rng.choice(PEOPLE),
        "project": rng.choice(PROJECTS),
        "system": rng.choice(SYSTEMS),
        "problem": rng.choice(PROBLEMS),
        "cause": rng.choice(CAUSES),
        "action": rng.choice(ACTIONS),
        "object": rng.choice(OBJECTS),
        "day": rng.choice(DAYS),
        "company": rng.choice(COMPANIES),
        "role": rng.choice(ROLES),
        "food": rng.choice(FOODS),
        "number": str(rng.randint(2, 99)),
        "number2": str(rng.randint(20, 900)),
        "ticket": str(rng.randint(100, 9999)),
    }


@dataclass
class Corpus:
    templates: list[str]
    slots: list[dict[str, str]]
    texts: list[str]
    vectors: Vectors

    def copy_text(self, index: int, rng: random.Random) -> str:
        """The base sentence with one detail changed (as the next message about it would)."""
        values = dict(self.slots[index])
        key = rng.choice(("person", "day", "number", "person2", "ticket"))
        values[key] = slots(rng)[key]
        return self.templates[index].format(**values)


async def make_corpus(embedder: LocalEmbedder, count: int, rng: random.Random) -> Corpus:
    templates, values, texts = [], [], []
    seen: set[str] = set()
    while len(texts) < count:
        core = rng.choice(TEMPLATES)
        template = rng.choice(OPENERS) + core + rng.choice(TAILS)
        if not template[0].isupper() and template[0] != "@":
            template = template[0].upper() + template[1:]
        s = slots(rng)
        text = template.format(**s)
        if text in seen:
            continue
        seen.add(text)
        templates.append(template)
        values.append(s)
        texts.append(text)
    vectors = await embedder.embed(texts)
    return Corpus(templates, values, texts, vectors)


def questions(rng: random.Random, count: int) -> list[str]:
    return [rng.choice(QUESTIONS).format(**slots(rng)) for _ in range(count)]


# -- loading -----------------------------------------------------------------------------------


def layout(size: int) -> dict[str, int]:
    """Items per workspace at a total size."""
    sizes = {"big": size // 2, "mid": size // 10}
    if size >= 100_000:
        # Just above and just below memory.exact_search_below, where Memory switches from an
        # exact search to an HNSW index of the workspace's own: the hardest case of each path.
        line = MemoryConfig().exact_search_below
        sizes["edge"] = int(line * 1.1)
        sizes["below"] = int(line * 0.95)
        # Where, without an index of its own, a workspace would switch from an exact search to
        # the shared index (the hardest case of both).
        shared = EXACT_SEARCH_FACTOR * math.sqrt(size)
        if shared > 1.5 * line:
            sizes["gap"] = int(shared * 1.1)
    rest = size - sum(sizes.values())
    for i in range(rest // SMALL_WORKSPACE):
        sizes[f"small-{i:05d}"] = SMALL_WORKSPACE
    sizes["big"] += rest % SMALL_WORKSPACE
    return sizes


@dataclass
class Loaded:
    per_workspace: dict[str, int] = field(default_factory=dict)
    next_id: int = 1

    @property
    def total(self) -> int:
        return sum(self.per_workspace.values())


def perturb(
    vectors: Vectors, bases: np.ndarray[Any, Any], nprng: np.random.Generator, how: str
) -> Vectors:
    """Vectors near the bases'. "mix": nudged towards another real sentence's vector (cosine
    to the base ~0.93-0.99): every item is a point of its own, as in chat, where most messages
    are unique. "noise": isotropic Gaussian noise around the base: at 1M items from 20k
    sentences every sentence gets ~50 near-copies in a tight ball, far more duplication than
    chat has, and the hardest case for HNSW."""
    n, dims = len(bases), vectors.shape[1]
    base = vectors[bases]
    if how == "mix":
        others = vectors[nprng.integers(0, len(vectors), size=n)]
        weight = nprng.uniform(*MIX, size=(n, 1)).astype(np.float32)
        sigma = np.float32(NOISE[0])
        out = base + weight * others + nprng.standard_normal((n, dims), dtype=np.float32) * sigma
    else:
        sigma = nprng.uniform(*NOISE, size=(n, 1)).astype(np.float32)
        out = base + nprng.standard_normal((n, dims), dtype=np.float32) * sigma
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


async def load(
    pool: asyncpg.Pool,
    corpus: Corpus,
    target: dict[str, int],
    loaded: Loaded,
    rng: random.Random,
    nprng: np.random.Generator,
    perturbation: str = "mix",
) -> None:
    """Add items until each workspace holds its target count (COPY, like a bulk reindex)."""
    start = datetime(2024, 1, 1, tzinfo=UTC)
    pending: list[tuple[str, int]] = []
    for workspace, want in target.items():
        have = loaded.per_workspace.get(workspace, 0)
        if want > have:
            pending.append((workspace, want - have))
    chunk = 50_000
    items: list[tuple[Any, ...]] = []
    vectors: list[tuple[Any, ...]] = []

    async def flush() -> None:
        if not items:
            return
        async with pool.acquire() as conn:
            await conn.copy_records_to_table(
                "memory_items",
                records=items,
                columns=[
                    "id",
                    "workspace_id",
                    "kind",
                    "text",
                    "context",
                    "room_id",
                    "event_id",
                    "sender",
                    "created_at",
                    "updated_at",
                ],
            )
            await conn.copy_records_to_table(
                VECTORS, records=vectors, columns=["item_id", "workspace_id", "kind", "embedding"]
            )
        items.clear()
        vectors.clear()

    # Workspaces' rows interleaved at random, as a shared server stores them: a workspace's
    # rows end up spread over the table, which an exact scan of it pays for (one block per row,
    # near enough), and which loading each workspace in one block would hide.
    owner = np.repeat(np.arange(len(pending)), [count for _, count in pending])
    nprng.shuffle(owner)
    for offset in range(0, len(owner), chunk):
        owners = owner[offset : offset + chunk]
        bases = nprng.integers(0, len(corpus.texts), size=len(owners))
        noisy = perturb(corpus.vectors, bases, nprng, perturbation)
        for j, index in enumerate(owners):
            workspace = pending[index][0]
            item_id = loaded.next_id
            loaded.next_id += 1
            base = int(bases[j])
            at = start + timedelta(seconds=item_id * 7)
            items.append(
                (
                    item_id,
                    workspace,
                    "message",
                    corpus.copy_text(base, rng),
                    None,
                    f"!{workspace}-{item_id % 7}:bench",
                    f"$e{item_id}",
                    f"@{corpus.slots[base]['person'].lower()}:bench",
                    at,
                    at,
                )
            )
            vectors.append((item_id, workspace, "message", noisy[j]))
        await flush()
    for workspace, count in pending:
        loaded.per_workspace[workspace] = loaded.per_workspace.get(workspace, 0) + count
    await flush()
    async with pool.acquire() as conn:
        await conn.execute(
            "SELECT setval(pg_get_serial_sequence('memory_items', 'id'), $1)", loaded.next_id
        )


async def drop_hnsw(pool: asyncpg.Pool) -> None:
    """Bulk loads go in without the HNSW index, which is built afterwards (as reindex does)."""
    async with pool.acquire() as conn:
        await conn.execute(f"DROP INDEX IF EXISTS {VECTORS}_embedding")


async def build_hnsw(pool: asyncpg.Pool) -> float:
    async with pool.acquire() as conn:
        await conn.execute("SET maintenance_work_mem = '8GB'")
        await conn.execute("SET max_parallel_maintenance_workers = 2")
        started = time.perf_counter()
        await conn.execute(hnsw_index_sql(VECTORS))
        took = time.perf_counter() - started
        await conn.execute("VACUUM ANALYZE memory_items")
        await conn.execute(f"VACUUM ANALYZE {VECTORS}")
        await conn.execute(f"SELECT pg_prewarm('{VECTORS}_embedding')")
        await conn.execute(f"SELECT pg_prewarm('{VECTORS}')")
    return took


# -- measuring ---------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


@dataclass
class Timing:
    p50: float
    p95: float

    def __str__(self) -> str:
        return f"p50 {self.p50:7.2f} ms  p95 {self.p95:7.2f} ms"


async def timed(calls: Sequence[Callable[[], Awaitable[Any]]]) -> tuple[Timing, list[Any]]:
    for call in calls[:WARMUP]:
        await call()
    times, results = [], []
    for call in calls:
        started = time.perf_counter()
        results.append(await call())
        times.append((time.perf_counter() - started) * 1000)
    return Timing(statistics.median(times), pct(times, 0.95)), results


def recall_at_10(
    found: Sequence[Sequence[Candidate]], truth: Sequence[Sequence[Candidate]]
) -> list[float]:
    """Per question: the share of the exact search's top 10 among the first 10 candidates found
    by meaning."""
    shares = []
    for got, exact in zip(found, truth, strict=True):
        by_meaning = [c for c in got if c.vector_rank is not None]
        top = {c.item.id for c in sorted(by_meaning, key=lambda c: c.vector_rank or 0)[:10]}
        shares.append(len(top & {c.item.id for c in exact}) / max(1, len(exact)))
    return shares


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} / {five:.1f} on {os.cpu_count()} cores"


async def bench_size(
    memory: Memory, size: int, loaded: Loaded, qtexts: list[str], qvectors: Vectors
) -> None:
    store: MemoryStore = memory.store
    settings = memory.settings
    names = ("big", "mid", "gap", "edge", "below")
    groups = {name: name for name in names if name in loaded.per_workspace}
    groups["small"] = "small-00000"
    print(
        f"\n== {size:,} items; per workspace: "
        + ", ".join(f"{name} {loaded.per_workspace[w]:,}" for name, w in groups.items())
        + f" (+{len([w for w in loaded.per_workspace if w.startswith('small')]) - 1} more small)"
    )

    def search(
        workspace: str,
        i: int,
        *,
        exact: bool | None,
        text: bool,
        vector: bool,
        candidates: int = settings.candidates,
    ) -> Callable[[], Awaitable[Any]]:
        async def call() -> Any:
            return await store.search(
                workspace,
                text=qtexts[i] if text else None,
                vector=qvectors[i] if vector else None,
                model=memory.embedder.model,
                dims=memory.dims,
                candidates=candidates,
                ef_search=settings.ef_search,
                exact_below=settings.exact_search_below,
                fulltext_max_matches=settings.fulltext_max_matches,
                fulltext_min_match=settings.fulltext_min_match if vector else 0.0,
                exact=exact,
            )

        return call

    n = len(qtexts)
    for name, workspace in groups.items():
        path = await store.indexes.search_path(workspace, below=settings.exact_search_below)
        exact_path = path == "exact"
        strategy = "exact scan" if exact_path else f"HNSW, {path}"
        exact_t, exact_r = await timed(
            [
                search(workspace, i, exact=True, text=False, vector=True, candidates=10)
                for i in range(n)
            ]
        )
        vec_t, vec_r = await timed(
            [search(workspace, i, exact=None, text=False, vector=True) for i in range(n)]
        )
        recall = recall_at_10(vec_r, exact_r)
        text_t, _ = await timed(
            [search(workspace, i, exact=None, text=True, vector=False) for i in range(n)]
        )
        hybrid_t, _ = await timed(
            [search(workspace, i, exact=None, text=True, vector=True) for i in range(n)]
        )
        print(f"  {name:5} ({strategy})")
        print(
            f"    vector top-{settings.candidates:<3}     {vec_t}   recall@10 "
            f"{statistics.mean(recall):.3f} (min {min(recall):.2f})"
        )
        if exact_path:  # what the HNSW index would have done here instead
            forced_t, forced_r = await timed(
                [search(workspace, i, exact=False, text=False, vector=True) for i in range(n)]
            )
            forced = recall_at_10(forced_r, exact_r)
            print(
                f"    (HNSW instead)        {forced_t}   recall@10 {statistics.mean(forced):.3f}"
            )
        print(
            f"    exact scan (baseline) {exact_t}   vector/exact p95 {vec_t.p95 / exact_t.p95:.2f}"
        )
        print(f"    full text             {text_t}")
        print(f"    hybrid                {hybrid_t}")
    # The same run's baseline for the workspaces' own indexes: their searches without them.
    own = [
        (name, workspace)
        for name, workspace in groups.items()
        if await store.indexes.search_path(workspace, below=settings.exact_search_below)
        == "own index"
    ]
    if own:
        async with store.pool.acquire() as conn:
            for _, workspace in own:
                await conn.execute(f'DROP INDEX "{own_index_name(workspace)}"')
        store.forget_sizes()
        print("  without their own indexes (dropped for this; built again after the next load):")
        for name, workspace in own:
            path = await store.indexes.search_path(workspace, below=settings.exact_search_below)
            without_t, without_r = await timed(
                [search(workspace, i, exact=None, text=False, vector=True) for i in range(n)]
            )
            exact_t, exact_r = await timed(
                [
                    search(workspace, i, exact=True, text=False, vector=True, candidates=10)
                    for i in range(n)
                ]
            )
            recall = recall_at_10(without_r, exact_r)
            print(
                f"    {name:5} ({path:12}) {without_t}   recall@10 {statistics.mean(recall):.3f}"
            )
    # The memory part of an @ask: embed the question with the local model, then hybrid search.
    ask_t, _ = await timed([partial(memory.search, "big", q, k=8) for q in qtexts])
    embed_t, _ = await timed([partial(memory.embed_query, q) for q in qtexts])
    print(f"  @ask memory overhead (big): embed question {embed_t}")
    print(f"                              embed + hybrid {ask_t}")
    # A question naming someone who spoke there is searched twice at once (also without the
    # name); the same questions naming nobody are the baseline.
    about = [PROJECTS[i % len(PROJECTS)] for i in range(len(qtexts))]
    named_q = [f"What did {PEOPLE[i % len(PEOPLE)]} say about {p}?" for i, p in enumerate(about)]
    nobody_q = [f"What did the team say about {p}?" for p in about]
    nobody_t, _ = await timed([partial(memory.search, "big", q, k=8) for q in nobody_q])
    named_t, _ = await timed([partial(memory.search, "big", q, k=8) for q in named_q])
    people_t, people = await timed([partial(memory.store.senders, "big", PEOPLE_READ)] * 20)
    print(f"                              embed + hybrid, naming nobody {nobody_t}")
    print(f"                              embed + hybrid, naming a person {named_t}")
    print(f"  the workspace's people ({len(people[0])}), read uncached: {people_t}")
    print(f"  ({load_average()})")


async def bench_indexing(memory: Memory, corpus: Corpus, rng: random.Random, count: int) -> None:
    items = [
        MemoryInput(
            workspace_id="indexing",
            text=corpus.copy_text(rng.randrange(len(corpus.texts)), rng),
            room_id="!indexing:bench",
            event_id=f"$ix{i}",
            sender="@bench:bench",
            context="Team chat",
        )
        for i in range(count)
    ]
    started = time.perf_counter()
    await memory.indexer.add(items)
    await memory.indexer.flush(timeout=3600)
    took = time.perf_counter() - started
    embed_started = time.perf_counter()
    await memory.embedder.embed([f"Team chat: {i.text}" for i in items[:2000]])
    embed_rate = 2000 / (time.perf_counter() - embed_started)
    print(
        f"  indexing through the indexer: {count / took:,.0f} messages/s "
        f"({count} in {took:.1f} s; the model alone embeds {embed_rate:,.0f}/s)"
    )


async def start_database(root: Path) -> tuple[str, Any]:
    pgdata = root / "pg"
    url, server = await start_embedded(pgdata)
    conn = await asyncpg.connect(server.get_uri())
    try:
        for setting, value in [
            ("shared_buffers", "6GB"),
            ("effective_cache_size", "16GB"),
            ("maintenance_work_mem", "8GB"),
            ("max_parallel_maintenance_workers", "2"),
            ("work_mem", "32MB"),
            ("random_page_cost", "1.1"),
            ("max_wal_size", "8GB"),
            ("checkpoint_timeout", "30min"),
            ("synchronous_commit", "off"),
        ]:
            await conn.execute(f"ALTER SYSTEM SET {setting} = '{value}'")
    finally:
        await conn.close()
    await stop_embedded(server)  # restart to apply shared_buffers
    url, server = await start_embedded(pgdata)
    conn = await asyncpg.connect(url)
    await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
    await conn.close()
    return url, server


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=QUERIES)
    parser.add_argument("--base-sentences", type=int, default=BASE_SENTENCES)
    parser.add_argument("--index-messages", type=int, default=5000)
    parser.add_argument("--keep", action="store_true", help="keep the database directory")
    parser.add_argument("--perturbation", choices=("mix", "noise"), default="mix")
    parser.add_argument("--ef-search", type=int, default=MemoryConfig().ef_search)
    args = parser.parse_args()
    settings = MemoryConfig(ef_search=args.ef_search)
    sizes = [int(s) for s in args.sizes.split(",")]
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rng = random.Random(20250301)
    nprng = np.random.default_rng(20250301)

    root = Path(tempfile.mkdtemp(prefix="doryo-bench-memory-"))
    url, server = await start_database(root)
    embedder = LocalEmbedder("all-minilm-l6-v2", batch_size=128)
    try:
        started = time.perf_counter()
        await embedder.load()
        print(f"local model loaded in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        corpus = await make_corpus(embedder, args.base_sentences, rng)
        took = time.perf_counter() - started
        print(
            f"{len(corpus.texts):,} base sentences embedded in {took:.1f} s "
            f"({len(corpus.texts) / took:,.0f}/s); items: {args.perturbation} perturbation; "
            f"ef_search {settings.ef_search}"
        )
        qtexts = questions(rng, args.queries)
        qvectors = await embedder.embed(qtexts)
        pool = await db.connect(url, min_size=1, max_size=4)
        memory = await Memory.start(pool, embedder, settings)
        loaded = Loaded()
        for size in sizes:
            started = time.perf_counter()
            await drop_hnsw(pool)
            await load(pool, corpus, layout(size), loaded, rng, nprng, args.perturbation)
            load_s = time.perf_counter() - started
            build_s = await build_hnsw(pool)
            started = time.perf_counter()
            own = await memory.index_workspaces()
            own_s = time.perf_counter() - started
            async with pool.acquire() as conn:
                # The load's and builds' writes to disk now, not during the measurements.
                await conn.execute("CHECKPOINT")
            memory.store.forget_sizes()
            print(
                f"\nloaded to {loaded.total:,} items in {load_s:.0f} s; HNSW built in "
                f"{build_s:.0f} s; own indexes for {', '.join(own.built) or 'none'} in "
                f"{own_s:.0f} s ({load_average()})"
            )
            await bench_size(memory, size, loaded, qtexts, qvectors)
        print()
        await bench_indexing(memory, corpus, rng, args.index_messages)
        await memory.close()
        await pool.close()
    finally:
        await embedder.aclose()
        await stop_embedded(server)
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
