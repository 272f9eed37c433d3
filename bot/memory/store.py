"""Workspace memory in PostgreSQL: items, their vectors (pgvector, HNSW, cosine), full-text
search (tsvector, GIN), and the candidates of both for a hybrid search.

Schema, and why it is split in two:
- `memory_items` (migrations/0004_memory.sql) holds every remembered piece of text and what it
  came from, whatever the embedding model. Its `tsv` column is the full-text index.
- `memory_vectors` (item_id, workspace_id, kind, embedding vector(N)) is created here, at start,
  for the configured model: an HNSW index needs a column of one fixed size N, and N follows the
  model, which a migration cannot know. The model and N are recorded in the one row of
  `memory_embedding_model`; vectors of another model are never written next to them nor compared
  with them (EmbeddingModelMismatch until `doryo reindex`). workspace_id and kind are copied
  into it so that the index scan filters on them without a join (pgvector 0.8 iterative scans).
- `doryo reindex` builds `memory_vectors_next` for the new model beside the live table, then
  swaps the two in one short transaction: a crash half-way leaves the old vectors working
  (bot.memory.reindex).
- Items stored while no vector could be made (provider down, model mismatch) are listed in
  `memory_unembedded` and embedded later (Indexer.backfill, or reindex).

Every query filters on workspace_id; nothing here can return another workspace's items.

Search strategy, per query: a workspace with few vectors (below memory.exact_search_below, or
a small share of all: bot.memory.indexes) is searched exactly (its rows through the workspace
index, sorted by distance: a few ms, and exact); a bigger one through an HNSW index with
iterative scans (`hnsw.iterative_scan = relaxed_order`), which keep walking the graph until
enough rows of that workspace turned up. That index is the workspace's own (partial, `WHERE
workspace_id = …`) once a pass of bot.memory.indexes has built it, for any workspace of at least
memory.exact_search_below vectors and less than half of all: the shared index serves such a
workspace badly (a filtered scan walks ~total/size rows for each of its own). Full-text candidates
are the best ranked (Okapi BM25, bot.memory.wordstats) among the newest `fulltext_max_matches`
items holding any of the question's words, keeping those that hold a share of them
(memory.fulltext_min_match beside vectors; any one alone): the cap bounds the cost of common
words in big workspaces (and makes search by words recency-biased there).

Beside this module, one concept each: records (what is stored and handed out; the one
definition of an item's columns), sql (the queries, built by pure functions), indexes (how a
workspace's vectors are searched; its own HNSW index), reindex (`doryo reindex`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import numpy as np

from bot.core.errors import EmbeddingModelMismatch
from bot.memory.embeddings import Vectors
from bot.memory.indexes import WorkspaceIndexes
from bot.memory.records import (
    ITEM_COLUMNS,
    ApplyResult,
    Candidate,
    DeleteEvent,
    Insert,
    MemoryItem,
    MemoryKind,
    MemoryStats,
    ModelRecord,
    NewItem,
    Replace,
    WriteOp,
    item_from_row,
    item_values,
    stored_item,
)
from bot.memory.sql import (
    VECTORS,
    hnsw_index_sql,
    insert_items_sql,
    query_words,
    vector_settings,
    vector_sql,
    vector_table_sql,
    words_query,
    words_sql,
)
from bot.memory.wordstats import WordStatistics

log = logging.getLogger(__name__)


async def read_model(conn: asyncpg.Connection, *, lock: str = "") -> ModelRecord | None:
    """The model the stored vectors were made with (`lock`: FOR SHARE / FOR UPDATE)."""
    row = await conn.fetchrow(f"SELECT model, dims FROM memory_embedding_model {lock}")
    return ModelRecord(row["model"], row["dims"]) if row else None


def model_mismatch(
    record: ModelRecord | None, model: str, dims: int
) -> EmbeddingModelMismatch | None:
    if record is None or (record.model, record.dims) == (model, dims):
        return None
    return EmbeddingModelMismatch(
        stored_model=record.model, stored_dims=record.dims, model=model, dims=dims
    )


def _candidates(
    by_meaning: Sequence[asyncpg.Record], by_words: Sequence[asyncpg.Record]
) -> list[Candidate]:
    """One candidate per item, with its rank by meaning (nearest first) and by words."""
    found: dict[int, Candidate] = {}
    nearest = sorted(by_meaning, key=lambda row: (row["distance"], row["id"]))
    for rank, row in enumerate(nearest, start=1):
        found[row["id"]] = Candidate(item_from_row(row), rank, row["distance"], None, None)
    for row in by_words:
        meaning = found.get(row["id"])
        found[row["id"]] = Candidate(
            meaning.item if meaning else item_from_row(row),
            meaning.vector_rank if meaning else None,
            meaning.distance if meaning else None,
            row["text_rank"],
            row["text_score"],
        )
    return list(found.values())


class MemoryStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.indexes = WorkspaceIndexes(pool)
        self._word_stats = WordStatistics()

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    # -- the embedding model and the vectors table -------------------------------------------

    async def recorded_model(self) -> ModelRecord | None:
        """The model the stored vectors were made with (None: no vectors table yet)."""
        async with self._pool.acquire() as conn:
            return await read_model(conn)

    async def prepare(self, model: str, dims: int) -> ModelRecord:
        """Create the vectors table for `model` if there is none. Returns the recorded model,
        which differs from `model` when the configuration changed (the caller refuses then)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("LOCK TABLE memory_embedding_model IN EXCLUSIVE MODE")
            record = await read_model(conn)
            exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", VECTORS)
            if record is not None and exists:
                return record
            if record is None:
                record = ModelRecord(model, dims)
                await conn.execute(
                    "INSERT INTO memory_embedding_model (model, dims) VALUES ($1, $2)",
                    model,
                    dims,
                )
            log.info(
                "creating the memory vectors table for %s (%d dimensions)",
                record.model,
                record.dims,
            )
            await conn.execute(vector_table_sql(VECTORS, record.dims, foreign_key=True))
            await conn.execute(hnsw_index_sql(VECTORS))
            # Items written before (text only) wait to be embedded.
            await conn.execute(
                "INSERT INTO memory_unembedded (item_id) SELECT id FROM memory_items "
                "ON CONFLICT DO NOTHING"
            )
            return record

    # -- writes ------------------------------------------------------------------------------

    async def apply(
        self,
        ops: Sequence[WriteOp],
        *,
        model: str,
        dims: int,
        conn: asyncpg.Connection | None = None,
    ) -> ApplyResult:
        """Apply writes in order, in one transaction (the caller's, on `conn`, when given: its
        other writes and these commit together). Vectors are only written when `model` is the
        recorded one; otherwise the items are stored to be embedded later and
        `result.mismatch` says why."""
        if conn is not None:
            return await self._apply(conn, ops, model=model, dims=dims)
        async with self._pool.acquire() as own, own.transaction():
            return await self._apply(own, ops, model=model, dims=dims)

    async def _apply(
        self, conn: asyncpg.Connection, ops: Sequence[WriteOp], *, model: str, dims: int
    ) -> ApplyResult:
        result = ApplyResult()
        # FOR SHARE: a reindex swapping the vectors table waits for this write, or this
        # write waits for the swap and then sees the new model (see reindex_swap).
        record = await read_model(conn, lock="FOR SHARE")
        result.mismatch = model_mismatch(record, model, dims)
        with_vectors = record is not None and result.mismatch is None
        for op in ops:
            if isinstance(op, Insert):
                vectors = op.vectors if with_vectors else None
                items = await self._insert(conn, op.items, vectors)
                result.inserted += items
                if vectors is None:
                    result.unembedded += len(items)
            elif isinstance(op, Replace):
                vectors = op.vectors if with_vectors else None
                items = await self._replace(conn, op, vectors)
                result.replaced += len(items)
                if vectors is None:
                    result.unembedded += len(items)
            elif isinstance(op, DeleteEvent):
                result.deleted += await self._delete_event(conn, op.workspace_id, op.event_id)
            else:
                # The items, and the other pieces of their source.
                status = await conn.execute(
                    """
                    DELETE FROM memory_items m USING memory_items s
                    WHERE s.workspace_id = $1 AND s.id = ANY($2::bigint[])
                          AND m.workspace_id = $1
                          AND (m.id = s.id OR (m.event_id = s.event_id AND m.kind = s.kind))
                    """,
                    op.workspace_id,
                    list(op.ids),
                )
                result.deleted += int(status.split()[-1])
        return result

    async def _insert(
        self, conn: asyncpg.Connection, items: Sequence[NewItem], vectors: Vectors | None
    ) -> list[MemoryItem]:
        if not items:
            return []
        keys = {(i.workspace_id, i.event_id, i.kind) for i in items if i.event_id is not None}
        if keys:
            await conn.executemany(
                "DELETE FROM memory_items WHERE workspace_id = $1 AND event_id = $2 AND kind = $3",
                sorted(keys),  # a fixed order, so that two writers never deadlock
            )
        # Later pieces of the same key win (a message delivered twice in one batch).
        latest: dict[tuple[str, str | None, str, int], int] = {}
        for index, item in enumerate(items):
            if item.event_id is not None:
                latest[(item.workspace_id, item.event_id, item.kind, item.chunk)] = index
        keep = [
            index
            for index, item in enumerate(items)
            if item.event_id is None
            or latest[(item.workspace_id, item.event_id, item.kind, item.chunk)] == index
        ]
        ids = [
            row[0]
            for row in await conn.fetch(
                "SELECT nextval(pg_get_serial_sequence('memory_items', 'id')) "
                "FROM generate_series(1, $1)",
                len(keep),
            )
        ]
        now = datetime.now(UTC)
        stored = [
            stored_item(items[index], item_id, now)
            for item_id, index in zip(ids, keep, strict=True)
        ]
        await conn.executemany(insert_items_sql(), [item_values(item) for item in stored])
        if vectors is not None:
            await conn.executemany(
                f"INSERT INTO {VECTORS} (item_id, workspace_id, kind, embedding) "
                "VALUES ($1, $2, $3, $4)",
                [
                    (item_id, items[index].workspace_id, items[index].kind, vectors[index])
                    for item_id, index in zip(ids, keep, strict=True)
                ],
            )
        else:
            await conn.executemany(
                "INSERT INTO memory_unembedded (item_id) VALUES ($1)", [(i,) for i in ids]
            )
        return stored

    async def _replace(
        self, conn: asyncpg.Connection, op: Replace, vectors: Vectors | None
    ) -> list[MemoryItem]:
        rows = await conn.fetch(
            """
            SELECT DISTINCT ON (kind) kind, context, room_id, sender, author, agent, created_at,
                   metadata, source_event_ids
            FROM memory_items WHERE workspace_id = $1 AND event_id = $2
                  AND kind <> 'document'
            ORDER BY kind, chunk
            """,
            op.workspace_id,
            op.event_id,
        )
        replaced: list[MemoryItem] = []
        for row in rows:
            metadata = dict(row["metadata"])
            metadata["edited_at"] = op.edited_at.isoformat()
            new = tuple(
                NewItem(
                    workspace_id=op.workspace_id,
                    kind=row["kind"],
                    text=text,
                    context=row["context"],
                    chunk=chunk,
                    room_id=row["room_id"],
                    event_id=op.event_id,
                    sender=row["sender"],
                    author=row["author"],
                    agent=row["agent"],
                    created_at=row["created_at"],
                    metadata=metadata,
                    source_event_ids=tuple(row["source_event_ids"]),
                )
                for chunk, text in enumerate(op.texts)
            )
            replaced += await self._insert(conn, new, vectors)
        return replaced

    @staticmethod
    async def _delete_event(conn: asyncpg.Connection, workspace_id: str, event_id: str) -> int:
        status = await conn.execute(
            """
            DELETE FROM memory_items
            WHERE workspace_id = $1 AND (event_id = $2 OR source_event_ids @> ARRAY[$2])
            """,
            workspace_id,
            event_id,
        )
        return int(status.split()[-1])

    # -- reads -------------------------------------------------------------------------------

    async def display_names(self, user_ids: Sequence[str]) -> dict[str, str]:
        """People's display names, as rooms' member events give them (room_members, kept by
        bot/rooms/members.py): one of each person's, where they have one."""
        rows = await self._pool.fetch(
            """
            SELECT DISTINCT ON (user_id) user_id, displayname FROM room_members
            WHERE user_id = ANY($1::text[]) AND displayname IS NOT NULL
            ORDER BY user_id, membership = 'join' DESC
            """,
            list(user_ids),
        )
        return {r["user_id"]: r["displayname"] for r in rows}

    async def senders(self, workspace_id: str, limit: int) -> list[str]:
        """Who said something in a workspace (at most `limit` people, in ID order): one probe of
        the (workspace_id, sender) index per person, not a row per message."""
        rows = await self._pool.fetch(
            """
            WITH RECURSIVE s (sender) AS (
                (SELECT sender FROM memory_items
                 WHERE workspace_id = $1 AND sender IS NOT NULL ORDER BY sender LIMIT 1)
                UNION ALL
                SELECT (SELECT i.sender FROM memory_items i
                        WHERE i.workspace_id = $1 AND i.sender > s.sender
                        ORDER BY i.sender LIMIT 1)
                FROM s WHERE s.sender IS NOT NULL
            )
            SELECT sender FROM s WHERE sender IS NOT NULL LIMIT $2
            """,
            workspace_id,
            limit,
        )
        return [r["sender"] for r in rows]

    async def get(self, workspace_id: str, item_id: int) -> MemoryItem | None:
        row = await self._pool.fetchrow(
            f"SELECT {ITEM_COLUMNS} FROM memory_items i WHERE i.workspace_id = $1 AND i.id = $2",
            workspace_id,
            item_id,
        )
        return item_from_row(row) if row else None

    async def by_event(self, workspace_id: str, event_id: str) -> list[MemoryItem]:
        rows = await self._pool.fetch(
            f"""
            SELECT {ITEM_COLUMNS} FROM memory_items i
            WHERE i.workspace_id = $1 AND i.event_id = $2 ORDER BY i.kind, i.chunk
            """,
            workspace_id,
            event_id,
        )
        return [item_from_row(r) for r in rows]

    def forget_sizes(self) -> None:
        """Decide how each workspace is searched again at its next search (after a bulk load,
        say)."""
        self.indexes.forget()
        self._word_stats.forget()

    async def search(
        self,
        workspace_id: str,
        *,
        text: str | None,
        vector: Vectors | Awaitable[Vectors | None] | None,
        model: str,
        dims: int,
        kinds: Sequence[MemoryKind] | None = None,
        candidates: int = 40,
        ef_search: int = 400,
        exact_below: int = 10_000,
        fulltext_max_matches: int = 200,
        fulltext_min_match: float = 0.0,
        exact: bool | None = None,
    ) -> list[Candidate]:
        """Candidates of a workspace by meaning (`vector`), by words (`text`), or both.

        `vector` may still be on its way (an awaitable; None when it could not be made): the
        search by words, the model check and the plan settings are done meanwhile, so that only
        the vector query waits for it; the search goes by words alone if it comes back None.
        `fulltext_min_match`: the share of the question's words an item found by words must
        hold beside a vector (alone, words must find what they can: any one). `exact`: None
        chooses by the workspace's size; True/False force a strategy (benchmarks). Raises
        EmbeddingModelMismatch when a vector is asked for and `model` is not the recorded one.
        """
        use_text = bool(text and text.strip())
        if vector is None and not use_text:
            return []
        async with self._pool.acquire() as conn, conn.transaction(readonly=True):
            # Plan each search with its own words and workspace (the planner then sees how
            # common they are: a rare word goes through the GIN index, a common one through the
            # newest rows first); never JIT-compile it (tens of ms to save a few: PostgreSQL's
            # default jit_above_cost is met easily). The question's words come in the same trip.
            lexemes: list[str] = await conn.fetchval(
                "SELECT tsvector_to_array(to_tsvector('english', coalesce($1, ''))) "
                "FROM set_config('plan_cache_mode', 'force_custom_plan', true) AS plan, "
                "set_config('jit', 'off', true) AS jit",
                text if use_text else None,
            )

            async def by_words(min_share: float) -> list[asyncpg.Record]:
                words = words_query(lexemes, min_share)
                if words is None:
                    return []
                each = query_words(lexemes)
                weights = await self._word_stats.weights(conn, workspace_id, each)
                params: list[Any] = [
                    workspace_id,
                    candidates,
                    *words,
                    fulltext_max_matches,
                    each,
                    list(weights.idf),
                    weights.avg_length,
                ]
                if kinds:
                    params.append(list(kinds))
                return list(await conn.fetch(words_sql(kinds=bool(kinds)), *params))

            if vector is None:
                return _candidates([], await by_words(0.0))
            # Everything but the vector query is done while the vector may still be on its way.
            await self._check_model(conn, model, dims)
            found_by_words = await by_words(fulltext_min_match) if use_text else []
            if exact is None:
                exact = await self.indexes.path(conn, workspace_id, exact_below) == "exact"
            await conn.execute(vector_settings(exact, ef_search=ef_search, candidates=candidates))
            if not isinstance(vector, np.ndarray):
                vector = await vector
            if vector is None:  # the model failed: words must find what they can
                if use_text and fulltext_min_match > 0:
                    await conn.execute(
                        "SET LOCAL enable_seqscan TO DEFAULT; SET LOCAL enable_sort TO DEFAULT"
                    )
                    found_by_words = await by_words(0.0)
                return _candidates([], found_by_words)
            params = [workspace_id, vector, candidates]
            if kinds:
                params.append(list(kinds))
            found_by_meaning = await conn.fetch(
                vector_sql(exact=exact, kinds=bool(kinds)), *params
            )
        return _candidates(found_by_meaning, found_by_words)

    async def _check_model(self, conn: asyncpg.Connection, model: str, dims: int) -> None:
        """Raise EmbeddingModelMismatch unless the stored vectors are `model`'s."""
        record = await read_model(conn)
        if record is None:
            raise EmbeddingModelMismatch(
                stored_model="(nothing yet)", stored_dims=0, model=model, dims=dims
            )
        mismatch = model_mismatch(record, model, dims)
        if mismatch is not None:
            raise mismatch

    async def stats(self, workspace_id: str) -> MemoryStats:
        async with self._pool.acquire() as conn:
            kinds = await conn.fetch(
                """
                SELECT kind, count(*) FILTER (WHERE chunk = 0) AS items, count(*) AS pieces,
                       min(created_at) AS oldest, max(created_at) AS newest
                FROM memory_items WHERE workspace_id = $1 GROUP BY kind
                """,
                workspace_id,
            )
            agents = await conn.fetch(
                """
                SELECT agent, kind, count(*) AS items FROM memory_items
                WHERE workspace_id = $1 AND agent IS NOT NULL AND chunk = 0
                GROUP BY agent, kind ORDER BY agent, kind
                """,
                workspace_id,
            )
            unembedded = await conn.fetchval(
                """
                SELECT count(*) FROM memory_unembedded u JOIN memory_items i ON i.id = u.item_id
                WHERE i.workspace_id = $1
                """,
                workspace_id,
            )
            record = await read_model(conn)
        by_agent: dict[str, dict[str, int]] = {}
        for row in agents:
            by_agent.setdefault(row["agent"], {})[row["kind"]] = row["items"]
        return MemoryStats(
            workspace_id=workspace_id,
            items=sum(r["items"] for r in kinds),
            pieces=sum(r["pieces"] for r in kinds),
            by_kind={r["kind"]: r["items"] for r in kinds},
            by_agent=by_agent,
            unembedded=unembedded,
            oldest=min((r["oldest"] for r in kinds), default=None),
            newest=max((r["newest"] for r in kinds), default=None),
            model=record.model if record else None,
            dims=record.dims if record else None,
        )

    # -- retention ---------------------------------------------------------------------------

    async def workspaces_with_messages_before(self, before: datetime) -> list[str]:
        rows = await self._pool.fetch(
            "SELECT DISTINCT workspace_id FROM memory_items "
            "WHERE kind = 'message' AND created_at < $1",
            before,
        )
        return [r[0] for r in rows]

    async def messages_before(
        self, workspace_id: str, before: datetime, *, limit: int
    ) -> list[MemoryItem]:
        """A workspace's oldest messages (first pieces only), by room and time."""
        rows = await self._pool.fetch(
            f"""
            SELECT {ITEM_COLUMNS} FROM memory_items i
            WHERE i.workspace_id = $1 AND i.kind = 'message' AND i.created_at < $2
                  AND i.chunk = 0
            ORDER BY i.created_at, i.id LIMIT $3
            """,
            workspace_id,
            before,
            limit,
        )
        return [item_from_row(r) for r in rows]

    async def delete_messages_before(
        self, workspace_id: str, before: datetime, *, batch: int = 1000
    ) -> int:
        """In batches of `batch` rows, each its own short transaction: never a long lock."""
        deleted = 0
        while True:
            status = await self._pool.execute(
                """
                DELETE FROM memory_items WHERE id IN (
                    SELECT id FROM memory_items
                    WHERE workspace_id = $1 AND kind = 'message' AND created_at < $2
                    LIMIT $3
                )
                """,
                workspace_id,
                before,
                batch,
            )
            done = int(status.split()[-1])
            deleted += done
            if done < batch:
                return deleted

    # -- embedding later ---------------------------------------------------------------------

    async def unembedded(self, *, limit: int) -> list[MemoryItem]:
        rows = await self._pool.fetch(
            f"""
            SELECT {ITEM_COLUMNS} FROM memory_unembedded u JOIN memory_items i ON i.id = u.item_id
            ORDER BY u.item_id LIMIT $1
            """,
            limit,
        )
        return [item_from_row(r) for r in rows]

    async def add_vectors(
        self, items: Sequence[MemoryItem], vectors: Vectors, *, model: str, dims: int
    ) -> int:
        """Vectors for items stored without one. Returns how many were written."""
        async with self._pool.acquire() as conn, conn.transaction():
            record = await read_model(conn, lock="FOR SHARE")
            mismatch = model_mismatch(record, model, dims)
            if mismatch is not None:
                raise mismatch
            ids = [item.id for item in items]
            # Only items that still exist and still wait (an edit or a redaction may have won).
            await conn.executemany(
                f"""
                INSERT INTO {VECTORS} (item_id, workspace_id, kind, embedding)
                SELECT u.item_id, $2, $3, $4 FROM memory_unembedded u WHERE u.item_id = $1
                ON CONFLICT (item_id) DO NOTHING
                """,
                [
                    (item.id, item.workspace_id, item.kind, vectors[i])
                    for i, item in enumerate(items)
                ],
            )
            status = await conn.execute(
                "DELETE FROM memory_unembedded WHERE item_id = ANY($1)", ids
            )
            return int(status.split()[-1])
