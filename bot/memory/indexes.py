"""How a workspace's vectors are searched — exactly, through an HNSW index of its own, or
through the shared one — and the passes that build and drop the workspaces' own indexes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Literal

import asyncpg

from bot.core.db import LONG_COMMAND
from bot.memory.sql import (
    HNSW_EF_CONSTRUCTION,
    HNSW_M,
    OWN_INDEX_PREFIX,
    VECTORS,
    own_index_name,
)

log = logging.getLogger(__name__)

# How long the "is this workspace small enough for an exact search" answer is trusted.
_SIZE_TTL = 60.0
# Workspaces smaller than this × √(all stored vectors) are searched exactly (see
# WorkspaceIndexes.path), and always those below memory.exact_search_below.
EXACT_SEARCH_FACTOR = 25.0
# A workspace's own HNSW index is built for workspaces of less than this share of all vectors:
# the shared index serves a bigger one about as well (most rows it walks are that workspace's),
# and a second graph of most of the table would double the index's memory and writes.
OWN_INDEX_MAX_SHARE = 0.5
# Held (pg_try_advisory_lock) while index_workspaces runs: one builder at a time per database.
OWN_INDEX_LOCK = 0x646F72796F01


SearchPath = Literal["exact", "own index", "shared index"]


@dataclass(frozen=True, slots=True)
class OwnIndexes:
    """What one index_workspaces pass did."""

    built: tuple[str, ...] = ()
    """The workspaces that got an index of their own."""
    dropped: int = 0
    """Indexes dropped: their workspace shrank (or left), or their build had failed."""
    busy: bool = False
    """Another pass held the lock: this one did nothing."""


class WorkspaceIndexes:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._paths: dict[str, tuple[SearchPath, float]] = {}
        """workspace → (how its vectors are searched, when that was decided)."""

    def forget(self) -> None:
        """Decide how each workspace is searched again at its next search."""
        self._paths.clear()

    async def search_path(self, workspace_id: str, *, below: int) -> SearchPath:
        """How searches of this workspace go: exact, or through an HNSW index (its own or the
        shared one)."""
        async with self._pool.acquire() as conn:
            return await self.path(conn, workspace_id, below)

    async def path(self, conn: asyncpg.Connection, workspace_id: str, below: int) -> SearchPath:
        cached = self._paths.get(workspace_id)
        now = time.monotonic()
        if cached is not None and now - cached[1] < _SIZE_TTL:
            return cached[0]
        total, own = await conn.fetchrow(
            "SELECT (SELECT greatest(reltuples, 0)::bigint FROM pg_class "
            "        WHERE oid = to_regclass($1)), "
            "       coalesce((SELECT indisvalid FROM pg_index "
            "                 WHERE indexrelid = to_regclass($2)), false)",
            VECTORS,
            own_index_name(workspace_id),
        )
        path: SearchPath
        if own:
            path = "own index"
        else:
            # An exact search costs the workspace's size; a scan of the shared index, the rows
            # it must walk past to find enough of this workspace's, ~ total / size. Measured
            # (bench/memory.py), they cross near 25·√total: ~8k rows of 100k, ~25k of 1M.
            bound = max(below, int(EXACT_SEARCH_FACTOR * math.sqrt(total or 0)))
            # Counts at most `bound` rows (index only): cheap whatever the workspace's size.
            count = await conn.fetchval(
                f"SELECT count(*) FROM (SELECT 1 FROM {VECTORS} WHERE workspace_id = $1 "
                "LIMIT $2) s",
                workspace_id,
                bound,
            )
            path = "exact" if count < bound else "shared index"
        if len(self._paths) > 10_000:
            self._paths.clear()
        self._paths[workspace_id] = (path, now)
        return path

    async def build(self, *, min_size: int, maintenance_work_mem: str = "512MB") -> OwnIndexes:
        """Give each workspace of at least `min_size` vectors (and less than OWN_INDEX_MAX_SHARE
        of all) an HNSW index of its own, smallest first, and drop the indexes of workspaces
        below half of `min_size` (half: a workspace near the line is not rebuilt back and forth).
        Built CONCURRENTLY: searches and writes go on meanwhile; one that fails or is cancelled
        leaves an invalid index, dropped and built again by the next pass. One pass at a time
        per database: another returns at once with `busy`."""
        async with self._pool.acquire() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", OWN_INDEX_LOCK):
                return OwnIndexes(busy=True)
            try:
                done = await self._build(conn, min_size, maintenance_work_mem)
            except BaseException:
                # Mid-statement (a build cancelled, say) the session cannot be cleaned up with
                # another query: close it (that unlocks), and stop its build on the server.
                pid = conn.get_server_pid()
                conn.terminate()
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5):
                        await self._pool.execute("SELECT pg_cancel_backend($1)", pid)
                raise
            await conn.execute(
                f"SELECT pg_advisory_unlock({OWN_INDEX_LOCK}); RESET maintenance_work_mem"
            )
            return done

    async def _build(
        self, conn: asyncpg.Connection, min_size: int, maintenance_work_mem: str
    ) -> OwnIndexes:
        if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", VECTORS):
            return OwnIndexes()
        sizes: dict[str, int] = dict(
            await conn.fetch(f"SELECT workspace_id, count(*) FROM {VECTORS} GROUP BY 1")
        )
        total = sum(sizes.values())
        existing: dict[str, bool] = dict(
            await conn.fetch(
                "SELECT c.relname::text, i.indisvalid FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE i.indrelid = to_regclass($1) AND starts_with(c.relname, $2)",
                VECTORS,
                OWN_INDEX_PREFIX,
            )
        )
        keep = {own_index_name(w) for w, n in sizes.items() if n >= min_size / 2}
        dropped = 0
        for name, valid in existing.items():
            if name not in keep or not valid:
                await conn.execute(
                    f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"', timeout=LONG_COMMAND
                )
                dropped += 1
        if dropped:
            log.info("memory: dropped %d workspace indexes (shrunk, gone, failed builds)", dropped)
            self._paths.clear()
        wanted = [
            (n, w)
            for w, n in sizes.items()
            if min_size <= n < OWN_INDEX_MAX_SHARE * total and not existing.get(own_index_name(w))
        ]
        built: list[str] = []
        if not wanted:
            return OwnIndexes(dropped=dropped)
        await conn.execute(f"SET maintenance_work_mem = '{maintenance_work_mem}'")
        for n, workspace in sorted(wanted):
            started = time.monotonic()
            # The workspace ID goes in as a literal (an index predicate cannot take a
            # parameter), quoted by PostgreSQL itself.
            statement = await conn.fetchval(
                "SELECT format('CREATE INDEX CONCURRENTLY IF NOT EXISTS %I ON %I "
                "USING hnsw (embedding vector_cosine_ops) "
                "WITH (m = %s, ef_construction = %s) WHERE workspace_id = %L', "
                "$1::text, $2::text, $3::int, $4::int, $5::text)",
                own_index_name(workspace),
                VECTORS,
                HNSW_M,
                HNSW_EF_CONSTRUCTION,
                workspace,
            )
            await conn.execute(statement, timeout=LONG_COMMAND)
            self._paths.pop(workspace, None)
            built.append(workspace)
            log.info(
                "memory: workspace %s (%d vectors) has an HNSW index of its own, built in %.1f s",
                workspace,
                n,
                time.monotonic() - started,
            )
        return OwnIndexes(built=tuple(built), dropped=dropped)
