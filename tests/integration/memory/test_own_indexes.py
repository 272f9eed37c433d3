"""A workspace's own HNSW index (bot/memory/indexes.py) on the real PostgreSQL + pgvector:
built for a mid-size workspace and used by its searches, kept up to date by writes, dropped when
the workspace shrinks, rebuilt after a failed or cancelled build and after `doryo reindex`."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable

import asyncpg
import pytest

from bot import app
from bot.core.config import Config
from bot.memory import LocalEmbedder, Memory, MemoryInput, OwnIndexes
from bot.memory.indexes import OWN_INDEX_LOCK
from bot.memory.sql import VECTORS, own_index_name, vector_settings, vector_sql
from tests.conftest import running_bot
from tests.integration.memory.conftest import MemoryFactory
from tests.integration.memory.test_memory import message
from tests.poll import eventually

# A room ID with the characters a literal in SQL must get right.
MID = "!o'mid\\room:hs"
BIG = "!big:hs"
BELOW = 40  # memory.exact_search_below in these tests

PEOPLE = ["Alice", "Bilal", "Chen", "Dana", "Emil"]
TASKS = ["the release notes", "the migration", "the load test", "the backup job", "the API docs"]
DAYS = ["Monday", "Wednesday", "Friday", "next week"]
QUESTIONS = ["who writes the API docs?", "when is the migration due?", "backup job on Friday"]


def chat(workspace: str, count: int, start: int = 0) -> list[MemoryInput]:
    lines = itertools.islice(itertools.product(PEOPLE, TASKS, DAYS), start, start + count)
    return [
        message(workspace, f"${workspace}-{start + i}", f"{who} will finish {what} by {day}.")
        for i, (who, what, day) in enumerate(lines)
    ]


async def add(memory: Memory, items: list[MemoryInput]) -> None:
    await memory.indexer.add(items)
    await memory.indexer.flush()


async def workspaces(open_memory: MemoryFactory) -> Memory:
    """Three workspaces: MID (60 vectors, over the line and under half of all), BIG (more than
    half of all: the shared index serves it) and a tiny one."""
    memory = await open_memory(memory={"exact_search_below": BELOW})
    await add(memory, chat(MID, 60))
    await add(memory, chat(BIG, 100))
    await add(memory, chat("!tiny:hs", 5))
    return memory


async def own_indexes(pool: asyncpg.Pool) -> dict[str, bool]:
    rows = await pool.fetch(
        "SELECT c.relname::text, i.indisvalid FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = $1::regclass AND c.relname LIKE '%\\_ws\\_%'",
        VECTORS,
    )
    return dict((r[0], r[1]) for r in rows)


async def plan_of_search(memory: Memory, workspace: str) -> str:
    """The plan PostgreSQL makes for the vector query of a search of `workspace`, with the
    settings the search runs it with."""
    vector = (await memory.embed_query(QUESTIONS[0]))[0]
    async with memory.store.pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "SELECT set_config('plan_cache_mode', 'force_custom_plan', true); "
            + vector_settings(False, ef_search=400, candidates=40)
        )
        plan = await conn.fetchval(
            "EXPLAIN (FORMAT JSON) " + vector_sql(exact=False, kinds=False),
            workspace,
            vector,
            40,
        )
    return json.dumps(plan)


async def test_a_mid_size_workspace_gets_an_index_of_its_own_and_its_searches_use_it(
    open_memory: MemoryFactory,
) -> None:
    memory = await workspaces(open_memory)
    store = memory.store
    assert await store.indexes.search_path(MID, below=BELOW) != "own index"

    done = await memory.index_workspaces()
    assert done.built == (MID,) and done.dropped == 0 and not done.busy
    assert await own_indexes(store.pool) == {own_index_name(MID): True}
    assert await store.indexes.search_path(MID, below=BELOW) == "own index"
    assert await store.indexes.search_path(BIG, below=BELOW) != "own index"
    assert own_index_name(MID) in await plan_of_search(memory, MID)
    assert own_index_name(MID) not in await plan_of_search(memory, BIG)

    # It finds what an exact search finds, and only the workspace's own items.
    for question in QUESTIONS:
        exact = await memory.search(MID, question, k=10, mode="vector", exact=True)
        found = await memory.search(MID, question, k=10, mode="vector")
        assert [h.item.id for h in found] == [h.item.id for h in exact], question
        assert all(h.item.workspace_id == MID for h in found)

    # Writes keep it up to date.
    await add(memory, [message(MID, "$new", "Greta will rewrite the onboarding emails.")])
    hits = await memory.search(MID, "who rewrites the onboarding emails?", k=1, mode="vector")
    assert hits[0].item.event_id == "$new"

    # A second pass has nothing to do.
    assert await memory.index_workspaces() == OwnIndexes()


async def test_the_index_goes_when_the_workspace_shrinks_below_half_the_line(
    open_memory: MemoryFactory,
) -> None:
    memory = await workspaces(open_memory)
    store = memory.store
    assert (await memory.index_workspaces()).built == (MID,)
    # Still above half of the line: kept.
    await store.pool.execute(
        "DELETE FROM memory_items WHERE workspace_id = $1 AND id IN "
        "(SELECT id FROM memory_items WHERE workspace_id = $1 ORDER BY id LIMIT 30)",
        MID,
    )
    assert (await memory.index_workspaces()).dropped == 0
    await store.pool.execute(
        "DELETE FROM memory_items WHERE workspace_id = $1 AND id IN "
        "(SELECT id FROM memory_items WHERE workspace_id = $1 ORDER BY id LIMIT 15)",
        MID,
    )
    assert await memory.index_workspaces() == OwnIndexes(dropped=1)
    assert await own_indexes(store.pool) == {}
    assert await store.indexes.search_path(MID, below=BELOW) == "exact"
    hits = await memory.search(MID, QUESTIONS[0], k=3)
    assert hits and all(h.item.workspace_id == MID for h in hits)


async def test_a_failed_build_is_dropped_and_built_again(open_memory: MemoryFactory) -> None:
    memory = await workspaces(open_memory)
    pool = memory.store.pool
    # A build that failed half-way leaves an invalid index under the name.
    try:
        await pool.execute(
            f'CREATE UNIQUE INDEX CONCURRENTLY "{own_index_name(MID)}" ON {VECTORS} '
            "(workspace_id) WHERE workspace_id = $$" + MID + "$$"
        )
    except asyncpg.UniqueViolationError:
        pass
    assert await own_indexes(pool) == {own_index_name(MID): False}
    assert await memory.store.indexes.search_path(MID, below=BELOW) != "own index"

    done = await memory.index_workspaces()
    assert done.dropped == 1 and done.built == (MID,)
    assert await own_indexes(pool) == {own_index_name(MID): True}


async def test_a_cancelled_build_stops_on_the_server_and_frees_the_lock(
    open_memory: MemoryFactory, database_url: str
) -> None:
    memory = await workspaces(open_memory)
    pool = memory.store.pool
    # A transaction writing the table holds up a concurrent build until it ends.
    writer = await asyncpg.connect(database_url)
    try:
        transaction = writer.transaction()
        await transaction.start()
        await writer.execute(f"LOCK TABLE {VECTORS} IN ROW EXCLUSIVE MODE")
        building = asyncio.create_task(memory.index_workspaces())
        await eventually(
            lambda: pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE query LIKE 'CREATE INDEX CONCURRENTLY%' AND wait_event_type = 'Lock'"
            )
        )
        building.cancel()
        try:
            await building
        except asyncio.CancelledError:
            pass
        else:
            raise AssertionError("the pass was not cancelled")
        # The build stopped on the server too (it would wait for the writer otherwise).
        await eventually(
            lambda: pool.fetchval(
                "SELECT count(*) = 0 FROM pg_stat_activity "
                "WHERE query LIKE 'CREATE INDEX CONCURRENTLY%' AND state = 'active'"
            )
        )
        await transaction.rollback()
    finally:
        await writer.close()

    done = await memory.index_workspaces()  # not busy: the lock went with the build
    assert not done.busy and done.built == (MID,)
    assert await own_indexes(pool) == {own_index_name(MID): True}


async def test_one_pass_at_a_time(open_memory: MemoryFactory, database_url: str) -> None:
    memory = await workspaces(open_memory)
    other = await asyncpg.connect(database_url)
    try:
        await other.execute("SELECT pg_advisory_lock($1)", OWN_INDEX_LOCK)
        assert (await memory.index_workspaces()).busy
        assert await own_indexes(memory.store.pool) == {}
    finally:
        await other.close()
    assert (await memory.index_workspaces()).built == (MID,)


async def test_reindex_builds_the_workspaces_own_indexes_again(
    open_memory: MemoryFactory,
) -> None:
    memory = await workspaces(open_memory)
    assert (await memory.index_workspaces()).built == (MID,)
    await memory.reindex(batch_size=50)
    assert await own_indexes(memory.store.pool) == {own_index_name(MID): True}
    assert await memory.store.indexes.search_path(MID, below=BELOW) == "own index"
    assert own_index_name(MID) in await plan_of_search(memory, MID)


async def test_the_running_bot_builds_them_in_the_background(
    bot_config: Callable[..., Config],
    local_embedder: LocalEmbedder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(app, "OWN_INDEX_INTERVAL", 0.2)
    config = bot_config(memory={"exact_search_below": BELOW})
    async with running_bot(config, local_embedder) as doryo:
        memory = doryo.ctx.memory
        assert memory is not None
        await add(memory, chat(MID, 60) + chat(BIG, 100))

        # CREATE INDEX CONCURRENTLY makes the index first (invalid) and validates it after:
        # wait for the end of the build, not its start.
        async def built() -> dict[str, bool]:
            indexes = await own_indexes(memory.store.pool)
            return indexes if indexes and all(indexes.values()) else {}

        assert await eventually(built, timeout=10) == {own_index_name(MID): True}
