"""`doryo reindex`: every item embedded again with another model into `memory_vectors_next`,
beside the live table, which is swapped in in one short transaction (a crash half-way leaves
the old vectors working)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import asyncpg

from bot.core.db import LONG_COMMAND
from bot.memory.embeddings import Embedder, Vectors, names_the_speaker
from bot.memory.indexes import OWN_INDEX_LOCK, WorkspaceIndexes
from bot.memory.speakers import Embeddable, Piece, embedding_texts
from bot.memory.sql import NEXT_VECTORS, VECTORS, hnsw_index_sql, vector_table_sql
from bot.memory.store import MemoryStore, read_model
from bot.memory.text import embedding_text

Texts = Callable[[Sequence[Embeddable]], Awaitable[list[str]]]
_READ = "id, workspace_id, kind, text, context, sender"


async def plain_texts(items: Sequence[Embeddable]) -> list[str]:
    return [embedding_text(i.text, i.context) for i in items]


@dataclass(frozen=True, slots=True)
class ReindexResult:
    model: str
    dims: int
    items: int
    seconds: float


class ReindexStore:
    """The reindex's reads and writes: the new table filled in passes, then swapped in."""

    def __init__(
        self, pool: asyncpg.Pool, indexes: WorkspaceIndexes, texts: Texts = plain_texts
    ) -> None:
        """`texts`: what to embed for the items read (with their speakers or not)."""
        self._pool = pool
        self._indexes = indexes
        self._texts = texts

    async def _to_embed(self, rows: Sequence[asyncpg.Record]) -> list[tuple[int, str, str, str]]:
        texts = await self._texts(
            [Piece(r["kind"], r["text"], r["context"], r["sender"]) for r in rows]
        )
        return [
            (r["id"], r["workspace_id"], r["kind"], t) for r, t in zip(rows, texts, strict=True)
        ]

    async def begin(self, dims: int) -> None:
        """A fresh `memory_vectors_next` of `dims` dimensions (a crashed run's is dropped)."""
        async with self._pool.acquire() as conn:
            await conn.execute(f"DROP TABLE IF EXISTS {NEXT_VECTORS}")
            await conn.execute(vector_table_sql(NEXT_VECTORS, dims, foreign_key=False))

    async def items_after(self, after_id: int, *, limit: int) -> list[tuple[int, str, str, str]]:
        """(id, workspace_id, kind, text to embed) of items with a greater id, in id order."""
        rows = await self._pool.fetch(
            f"SELECT {_READ} FROM memory_items WHERE id > $1 ORDER BY id LIMIT $2",
            after_id,
            limit,
        )
        return await self._to_embed(rows)

    @staticmethod
    async def _copy_next(
        conn: asyncpg.Connection, rows: Sequence[tuple[int, str, str, str]], vectors: Vectors
    ) -> None:
        await conn.copy_records_to_table(
            NEXT_VECTORS,
            records=[(r[0], r[1], r[2], vectors[i]) for i, r in enumerate(rows)],
            columns=["item_id", "workspace_id", "kind", "embedding"],
        )

    async def write(self, rows: Sequence[tuple[int, str, str, str]], vectors: Vectors) -> None:
        async with self._pool.acquire() as conn:
            await self._copy_next(conn, rows, vectors)

    async def build_index(self, *, maintenance_work_mem: str) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(f"SET maintenance_work_mem = '{maintenance_work_mem}'")
            try:
                await conn.execute(hnsw_index_sql(NEXT_VECTORS), timeout=LONG_COMMAND)
            finally:
                await conn.execute("RESET maintenance_work_mem")

    async def swap(
        self,
        model: str,
        dims: int,
        after_id: int,
        embed: Callable[[list[str]], Awaitable[Vectors]],
    ) -> int:
        """Make `memory_vectors_next` the live table, recorded as `model`. Items written since
        the pass that filled it (id > after_id) are embedded here, with writes held back.
        Returns how many were caught up."""
        async with self._pool.acquire() as conn, conn.transaction():
            # A pass of index_workspaces building on the live table first (it would wait for
            # this transaction, and this one for it), before anything that holds back writes.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", OWN_INDEX_LOCK)
            # The record first, then the items (apply() locks in the same order: no deadlock).
            record = await read_model(conn, lock="FOR UPDATE")
            await conn.execute("LOCK TABLE memory_items IN SHARE MODE")
            late = await self._to_embed(
                await conn.fetch(
                    f"SELECT {_READ} FROM memory_items WHERE id > $1 ORDER BY id", after_id
                )
            )
            if late:
                vectors = await embed([r[3] for r in late])
                await self._copy_next(conn, late, vectors)
            # Items deleted (redacted, edited, pruned) while the pass ran.
            await conn.execute(
                f"DELETE FROM {NEXT_VECTORS} n "
                "WHERE NOT EXISTS (SELECT 1 FROM memory_items i WHERE i.id = n.item_id)",
                timeout=LONG_COMMAND,
            )
            await conn.execute(
                f"""
                ALTER TABLE {NEXT_VECTORS} ADD CONSTRAINT {NEXT_VECTORS}_item_fkey
                    FOREIGN KEY (item_id) REFERENCES memory_items (id) ON DELETE CASCADE;
                DROP TABLE IF EXISTS {VECTORS};
                ALTER TABLE {NEXT_VECTORS} RENAME TO {VECTORS};
                ALTER TABLE {VECTORS} RENAME CONSTRAINT {NEXT_VECTORS}_pkey TO {VECTORS}_pkey;
                ALTER TABLE {VECTORS}
                    RENAME CONSTRAINT {NEXT_VECTORS}_item_fkey TO {VECTORS}_item_fkey;
                ALTER INDEX {NEXT_VECTORS}_workspace RENAME TO {VECTORS}_workspace;
                ALTER INDEX {NEXT_VECTORS}_embedding RENAME TO {VECTORS}_embedding;
                DELETE FROM memory_unembedded;
                """,
                timeout=LONG_COMMAND,
            )
            if record is None:
                await conn.execute(
                    "INSERT INTO memory_embedding_model (model, dims) VALUES ($1, $2)", model, dims
                )
            else:
                await conn.execute(
                    "UPDATE memory_embedding_model SET model = $1, dims = $2, updated_at = now()",
                    model,
                    dims,
                )
        self._indexes.forget()
        return len(late)


async def reindex(
    store: MemoryStore,
    embedder: Embedder,
    *,
    batch_size: int = 256,
    maintenance_work_mem: str = "1GB",
    progress: Callable[[int], None] | None = None,
    own_index_min: int | None = None,
) -> ReindexResult:
    """Re-embed every item with `embedder` into a new vectors table, build its HNSW index, then
    make it the live one, recorded with the model (`doryo reindex`). The old vectors serve until
    the swap; items written meanwhile are caught up in it. The workspaces' own indexes go with
    the old table: with `own_index_min` (memory.exact_search_below) they are built again on the
    new one before this returns (or by the running bot's next pass, if it is building then)."""
    started = time.monotonic()
    dims = await embedder.dimensions()
    reindexing = ReindexStore(
        store.pool,
        store.indexes,
        lambda items: embedding_texts(
            items, with_speaker=names_the_speaker(embedder.model), names=store.display_names
        ),
    )
    await reindexing.begin(dims)
    last_id = 0
    done = 0
    while rows := await reindexing.items_after(last_id, limit=batch_size):
        vectors = await embedder.embed([r[3] for r in rows])
        await reindexing.write(rows, vectors)
        last_id = rows[-1][0]
        done += len(rows)
        if progress is not None:
            progress(done)
    await reindexing.build_index(maintenance_work_mem=maintenance_work_mem)
    late = await reindexing.swap(embedder.model, dims, last_id, embedder.embed)
    if own_index_min is not None:
        await store.indexes.build(
            min_size=own_index_min, maintenance_work_mem=maintenance_work_mem
        )
    return ReindexResult(embedder.model, dims, done + late, time.monotonic() - started)
