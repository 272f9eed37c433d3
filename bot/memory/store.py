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
  swaps the two in one short transaction: a crash half-way leaves the old vectors working.
- Items stored while no vector could be made (provider down, model mismatch) are listed in
  `memory_unembedded` and embedded later (Indexer.backfill, or reindex).

Every query filters on workspace_id; nothing here can return another workspace's items.

Search strategy, per query: a workspace with few vectors (below memory.exact_search_below, or
a small share of all: see _search_path) is searched exactly (its rows through the workspace
index, sorted by distance: a few ms, and exact); a bigger one through an HNSW index with
iterative scans (`hnsw.iterative_scan = relaxed_order`), which keep walking the graph until
enough rows of that workspace turned up. That index is the workspace's own (partial, `WHERE
workspace_id = …`) once index_workspaces has built it, for any workspace of at least
memory.exact_search_below vectors and less than half of all: the shared index serves such a
workspace badly (a filtered scan walks ~total/size rows for each of its own). Full-text candidates
are the best ranked (Okapi BM25, bot.memory.wordstats) among the newest `fulltext_max_matches`
items holding any of the question's words, keeping those that hold a share of them
(memory.fulltext_min_match beside vectors; any one alone): the cap bounds the cost of common
words in big workspaces (and makes search by words recency-biased there).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

import asyncpg
import numpy as np

from bot.errors import EmbeddingModelMismatch
from bot.memory.embeddings import Vectors
from bot.memory.text import embedding_text
from bot.memory.wordstats import K1, B, WordStatistics, tsquery_lexeme

log = logging.getLogger(__name__)

MemoryKind = Literal["message", "summary", "fact", "document"]
KINDS: tuple[MemoryKind, ...] = get_args(MemoryKind)

VECTORS = "memory_vectors"
NEXT_VECTORS = "memory_vectors_next"

# How long the "is this workspace small enough for an exact search" answer is trusted.
_SIZE_TTL = 60.0
# Workspaces smaller than this × √(all stored vectors) are searched exactly (see
# MemoryStore._search_path), and always those below memory.exact_search_below.
EXACT_SEARCH_FACTOR = 25.0

_ITEM_COLUMNS = (
    "i.id, i.workspace_id, i.kind, i.text, i.context, i.chunk, i.room_id, i.event_id, i.sender, "
    "i.author, i.agent, i.created_at, i.updated_at, i.metadata, i.source_event_ids"
)
# Full-text search: the newest items holding any of the question's words (lexemes) are found
# through the GIN index or the newest rows first, whichever the planner sees is cheaper for
# these words; of those, the ones holding at least a share of the words (any k of n, written
# out as a tsquery) are ranked. (The k-of-n query is not the index condition: its selectivity is
# misestimated, and the planner then walks far too many rows.) A question longer than this many
# distinct words keeps its longest ones, a bound on the query.
MAX_QUERY_WORDS = 10


@dataclass(frozen=True, slots=True)
class MemoryInput:
    """Something to remember, as the history (or a command) hands it to the indexer."""

    workspace_id: str
    text: str
    kind: MemoryKind = "message"
    context: str | None = None
    """What the text is part of (the session's topic, a document's title): embedded with it."""
    room_id: str | None = None
    event_id: str | None = None
    """The source event: unique per workspace for messages; redacting it deletes the item."""
    sender: str | None = None
    author: str | None = None
    agent: str | None = None
    created_at: datetime | None = None
    """When it was said (the event's origin_server_ts); default: now."""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    source_event_ids: tuple[str, ...] = ()
    """For derived items (summaries): the events they were made from."""


@dataclass(frozen=True, slots=True)
class MemoryItem:
    id: int
    workspace_id: str
    kind: MemoryKind
    text: str
    context: str | None
    chunk: int
    room_id: str | None
    event_id: str | None
    sender: str | None
    author: str | None
    agent: str | None
    created_at: datetime
    updated_at: datetime
    metadata: Mapping[str, Any]
    source_event_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NewItem:
    """One row to write: an input (redacted, split) piece with its final text."""

    workspace_id: str
    kind: MemoryKind
    text: str
    context: str | None
    chunk: int
    room_id: str | None
    event_id: str | None
    sender: str | None
    author: str | None
    agent: str | None
    created_at: datetime
    metadata: Mapping[str, Any]
    source_event_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Candidate:
    """An item one of the retrievers proposed, with its rank there (1 = best)."""

    item: MemoryItem
    vector_rank: int | None
    distance: float | None
    text_rank: int | None
    text_score: float | None


@dataclass(frozen=True, slots=True)
class ModelRecord:
    model: str
    dims: int


@dataclass(frozen=True, slots=True)
class MemoryStats:
    workspace_id: str
    items: int
    """Remembered items (a long text split in pieces counts once)."""
    pieces: int
    by_kind: Mapping[str, int]
    by_agent: Mapping[str, Mapping[str, int]]
    """agent → kind → items, for items recorded with an agent."""
    unembedded: int
    """Pieces waiting for a vector (found by words only until then)."""
    oldest: datetime | None
    newest: datetime | None
    model: str | None
    dims: int | None


# Writes, applied in order in one transaction by MemoryStore.apply.
@dataclass(frozen=True, slots=True)
class Insert:
    """Store items, replacing the pieces of the same workspace, event and kind."""

    items: tuple[NewItem, ...]
    vectors: Vectors | None
    """One row per item, or None: store them to be embedded later."""


@dataclass(frozen=True, slots=True)
class Replace:
    """An edit: the event's items get this text (as pieces), keeping what else they had."""

    workspace_id: str
    event_id: str
    texts: tuple[str, ...]
    vectors: Vectors | None
    edited_at: datetime


@dataclass(frozen=True, slots=True)
class DeleteEvent:
    """A redaction: delete the event's items, and items derived from it."""

    workspace_id: str
    event_id: str


@dataclass(frozen=True, slots=True)
class DeleteItems:
    """Delete items by ID, with the other pieces of their source event."""

    workspace_id: str
    ids: tuple[int, ...]


WriteOp = Insert | Replace | DeleteEvent | DeleteItems


@dataclass(slots=True)
class ApplyResult:
    inserted: list[MemoryItem] = field(default_factory=list)
    deleted: int = 0
    replaced: int = 0
    unembedded: int = 0
    mismatch: EmbeddingModelMismatch | None = None


def _item(row: asyncpg.Record) -> MemoryItem:
    return MemoryItem(
        id=row["id"],
        workspace_id=row["workspace_id"],
        kind=row["kind"],
        text=row["text"],
        context=row["context"],
        chunk=row["chunk"],
        room_id=row["room_id"],
        event_id=row["event_id"],
        sender=row["sender"],
        author=row["author"],
        agent=row["agent"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        metadata=row["metadata"],
        source_event_ids=tuple(row["source_event_ids"]),
    )


def _vector_table_sql(table: str, dims: int, *, foreign_key: bool) -> str:
    reference = " REFERENCES memory_items (id) ON DELETE CASCADE" if foreign_key else ""
    return f"""
        CREATE TABLE {table} (
            item_id      bigint    PRIMARY KEY{reference},
            workspace_id text      NOT NULL,
            kind         text      NOT NULL,
            embedding    vector({int(dims)}) NOT NULL
        );
        CREATE INDEX {table}_workspace ON {table} (workspace_id, kind)
    """


# HNSW build parameters. ef_construction 128 (pgvector's default is 64) builds a graph that
# finds the true neighbours of questions far from every stored text more often (bench/memory.py
# at 100k items, ef_search 100: recall@10 0.95 → 0.97), for 1.5× the build time.
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 128


def hnsw_index_sql(table: str) -> str:
    return (
        f"CREATE INDEX {table}_embedding ON {table} USING hnsw (embedding vector_cosine_ops) "
        f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})"
    )


# A workspace's own HNSW index is built for workspaces of less than this share of all vectors:
# the shared index serves a bigger one about as well (most rows it walks are that workspace's),
# and a second graph of most of the table would double the index's memory and writes.
OWN_INDEX_MAX_SHARE = 0.5
# Held (pg_try_advisory_lock) while index_workspaces runs: one builder at a time per database.
_OWN_INDEX_LOCK = 0x646F72796F01
_OWN_INDEX_PREFIX = f"{VECTORS}_ws_"


def own_index_name(workspace_id: str) -> str:
    """The name of a workspace's own HNSW index: a digest, as workspace IDs (room IDs) may be
    longer than a name may be, and hold any character."""
    return _OWN_INDEX_PREFIX + hashlib.blake2b(workspace_id.encode(), digest_size=8).hexdigest()


def query_words(lexemes: Sequence[str]) -> list[str]:
    """The words of a question that a search by words uses: its longest MAX_QUERY_WORDS
    lexemes, sorted."""
    return sorted(sorted(set(lexemes), key=lambda w: (-len(w), w))[:MAX_QUERY_WORDS])


def words_query(lexemes: Sequence[str], min_share: float) -> tuple[str, str] | None:
    """tsquery texts for a question's lexemes: (what an item must match: at least
    ceil(min_share × n) of the n words, at least one; what it is ranked by: any of them).
    None without words (a question of stopwords only)."""
    words = query_words(lexemes)
    if not words:
        return None
    quoted = [tsquery_lexeme(w) for w in words]
    any_word = " | ".join(quoted)
    need = min(len(words), max(1, math.ceil(min_share * len(words) - 1e-9)))
    if need == 1:
        return any_word, any_word
    if need == len(words):
        return " & ".join(quoted), any_word
    groups = (" & ".join(group) for group in itertools.combinations(quoted, need))
    return " | ".join(f"({g})" for g in groups), any_word


def _vector_settings(exact: bool, *, ef_search: int, candidates: int) -> str:
    """The planner settings a vector search runs with (SET LOCAL, inside the search's
    transaction: the vector query is its last)."""
    if exact:
        # The workspace's rows through its btree index, whatever the planner estimates.
        return "SET LOCAL enable_seqscan = off"
    # The HNSW index, never a sort of the workspace's rows: the planner's estimates for
    # filtered HNSW scans are rough, and it picks that sort at times (300 ms for a workspace
    # of 500k).
    return (
        f"SET LOCAL hnsw.ef_search = {max(int(ef_search), int(candidates))}; "
        "SET LOCAL hnsw.iterative_scan = relaxed_order; SET LOCAL enable_sort = off"
    )


def _vector_sql(*, exact: bool, kinds: bool) -> str:
    """The items of the nearest `$3` vectors of workspace `$1` to `$2` (kinds `$4`), with their
    distance (in no particular order: iterative scans return rows roughly sorted)."""
    kind_filter = "AND kind = ANY($4::text[])" if kinds else ""
    # "+ 0": an expression the HNSW index does not serve, so the rows come from the workspace's
    # btree index and are sorted by their exact distance.
    order = "(embedding <=> $2) + 0" if exact else "embedding <=> $2"
    return f"""
        WITH v AS MATERIALIZED (
            SELECT item_id, embedding <=> $2 AS distance FROM {VECTORS}
            WHERE workspace_id = $1 {kind_filter}
            ORDER BY {order} LIMIT $3
        )
        SELECT {_ITEM_COLUMNS}, v.distance
        FROM v JOIN memory_items i ON i.id = v.item_id
        WHERE i.workspace_id = $1
    """


def _words_sql(*, kinds: bool) -> str:
    """The items of workspace `$1` (kinds `$9`) best found by words: of the newest `$5` holding
    any word (`$4` tsquery), the best `$2` by Okapi BM25 of those matching `$3` (tsquery), with
    their score and rank. `$6`: the question's lexemes, `$7` their IDF in the workspace, `$8`
    the workspace's average length (bot.memory.wordstats)."""
    kind_filter = "AND kind = ANY($9::text[])" if kinds else ""
    return f"""
        WITH newest AS MATERIALIZED (
            SELECT id, tsv FROM memory_items
            WHERE workspace_id = $1 AND tsv @@ $4::tsquery {kind_filter}
            ORDER BY id DESC LIMIT $5
        ), t AS MATERIALIZED (
            SELECT n.id,
                   sum(q.idf * u.tf * {K1 + 1}
                       / (u.tf + {K1} * (1 - {B} + {B} * length(n.tsv) / $8))) AS text_score
            FROM newest n
            CROSS JOIN LATERAL (
                SELECT lexeme, coalesce(cardinality(positions), 1) AS tf FROM unnest(n.tsv)
            ) u
            JOIN unnest($6::text[], $7::float8[]) AS q(lexeme, idf) ON q.lexeme = u.lexeme
            WHERE n.tsv @@ $3::tsquery
            GROUP BY n.id
            ORDER BY text_score DESC, n.id DESC LIMIT $2
        )
        SELECT {_ITEM_COLUMNS}, t.text_score,
               row_number() OVER (ORDER BY t.text_score DESC, t.id DESC) AS text_rank
        FROM t JOIN memory_items i ON i.id = t.id
        WHERE i.workspace_id = $1
    """


def _candidates(
    by_meaning: Sequence[asyncpg.Record], by_words: Sequence[asyncpg.Record]
) -> list[Candidate]:
    """One candidate per item, with its rank by meaning (nearest first) and by words."""
    found: dict[int, Candidate] = {}
    nearest = sorted(by_meaning, key=lambda row: (row["distance"], row["id"]))
    for rank, row in enumerate(nearest, start=1):
        found[row["id"]] = Candidate(_item(row), rank, row["distance"], None, None)
    for row in by_words:
        meaning = found.get(row["id"])
        found[row["id"]] = Candidate(
            meaning.item if meaning else _item(row),
            meaning.vector_rank if meaning else None,
            meaning.distance if meaning else None,
            row["text_rank"],
            row["text_score"],
        )
    return list(found.values())


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


class MemoryStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._paths: dict[str, tuple[SearchPath, float]] = {}
        self._word_stats = WordStatistics()
        """workspace → (how its vectors are searched, when that was decided)."""

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    # -- the embedding model and the vectors table -------------------------------------------

    @staticmethod
    async def _record(conn: asyncpg.Connection, *, lock: str = "") -> ModelRecord | None:
        row = await conn.fetchrow(f"SELECT model, dims FROM memory_embedding_model {lock}")
        return ModelRecord(row["model"], row["dims"]) if row else None

    async def recorded_model(self) -> ModelRecord | None:
        """The model the stored vectors were made with (None: no vectors table yet)."""
        async with self._pool.acquire() as conn:
            return await self._record(conn)

    async def prepare(self, model: str, dims: int) -> ModelRecord:
        """Create the vectors table for `model` if there is none. Returns the recorded model,
        which differs from `model` when the configuration changed (the caller refuses then)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("LOCK TABLE memory_embedding_model IN EXCLUSIVE MODE")
            record = await self._record(conn)
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
            await conn.execute(_vector_table_sql(VECTORS, record.dims, foreign_key=True))
            await conn.execute(hnsw_index_sql(VECTORS))
            # Items written before (text only) wait to be embedded.
            await conn.execute(
                "INSERT INTO memory_unembedded (item_id) SELECT id FROM memory_items "
                "ON CONFLICT DO NOTHING"
            )
            return record

    @staticmethod
    def _check(record: ModelRecord | None, model: str, dims: int) -> EmbeddingModelMismatch | None:
        if record is None or (record.model, record.dims) == (model, dims):
            return None
        return EmbeddingModelMismatch(
            stored_model=record.model, stored_dims=record.dims, model=model, dims=dims
        )

    # -- writes ------------------------------------------------------------------------------

    async def apply(self, ops: Sequence[WriteOp], *, model: str, dims: int) -> ApplyResult:
        """Apply writes in order, in one transaction. Vectors are only written when `model`
        is the recorded one; otherwise the items are stored to be embedded later and
        `result.mismatch` says why."""
        result = ApplyResult()
        async with self._pool.acquire() as conn, conn.transaction():
            # FOR SHARE: a reindex swapping the vectors table waits for this write, or this
            # write waits for the swap and then sees the new model (see reindex_swap).
            record = await self._record(conn, lock="FOR SHARE")
            result.mismatch = self._check(record, model, dims)
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
        rows = []
        stored = []
        for item_id, index in zip(ids, keep, strict=True):
            item = items[index]
            rows.append(
                (
                    item_id,
                    item.workspace_id,
                    item.kind,
                    item.text,
                    item.context,
                    item.chunk,
                    item.room_id,
                    item.event_id,
                    item.sender,
                    item.author,
                    item.agent,
                    item.created_at,
                    now,
                    dict(item.metadata),
                    list(item.source_event_ids),
                )
            )
            stored.append(
                MemoryItem(
                    id=item_id,
                    workspace_id=item.workspace_id,
                    kind=item.kind,
                    text=item.text,
                    context=item.context,
                    chunk=item.chunk,
                    room_id=item.room_id,
                    event_id=item.event_id,
                    sender=item.sender,
                    author=item.author,
                    agent=item.agent,
                    created_at=item.created_at,
                    updated_at=now,
                    metadata=dict(item.metadata),
                    source_event_ids=item.source_event_ids,
                )
            )
        await conn.executemany(
            """
            INSERT INTO memory_items (id, workspace_id, kind, text, context, chunk, room_id,
                                      event_id, sender, author, agent, created_at, updated_at,
                                      metadata, source_event_ids)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
            """,
            rows,
        )
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
        bot/rooms.py): one of each person's, where they have one."""
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
            f"SELECT {_ITEM_COLUMNS} FROM memory_items i WHERE i.workspace_id = $1 AND i.id = $2",
            workspace_id,
            item_id,
        )
        return _item(row) if row else None

    async def by_event(self, workspace_id: str, event_id: str) -> list[MemoryItem]:
        rows = await self._pool.fetch(
            f"""
            SELECT {_ITEM_COLUMNS} FROM memory_items i
            WHERE i.workspace_id = $1 AND i.event_id = $2 ORDER BY i.kind, i.chunk
            """,
            workspace_id,
            event_id,
        )
        return [_item(r) for r in rows]

    def forget_sizes(self) -> None:
        """Decide how each workspace is searched again at its next search (after a bulk load,
        say)."""
        self._paths.clear()
        self._word_stats.forget()

    async def search_path(self, workspace_id: str, *, below: int) -> SearchPath:
        """How searches of this workspace go: exact, or through an HNSW index (its own or the
        shared one)."""
        async with self._pool.acquire() as conn:
            return await self._search_path(conn, workspace_id, below)

    async def _search_path(
        self, conn: asyncpg.Connection, workspace_id: str, below: int
    ) -> SearchPath:
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

    # -- a workspace's own index -------------------------------------------------------------

    async def index_workspaces(
        self, *, min_size: int, maintenance_work_mem: str = "512MB"
    ) -> OwnIndexes:
        """Give each workspace of at least `min_size` vectors (and less than OWN_INDEX_MAX_SHARE
        of all) an HNSW index of its own, smallest first, and drop the indexes of workspaces
        below half of `min_size` (half: a workspace near the line is not rebuilt back and forth).
        Built CONCURRENTLY: searches and writes go on meanwhile; one that fails or is cancelled
        leaves an invalid index, dropped and built again by the next pass. One pass at a time
        per database: another returns at once with `busy`."""
        async with self._pool.acquire() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _OWN_INDEX_LOCK):
                return OwnIndexes(busy=True)
            try:
                done = await self._index_workspaces(conn, min_size, maintenance_work_mem)
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
                f"SELECT pg_advisory_unlock({_OWN_INDEX_LOCK}); RESET maintenance_work_mem"
            )
            return done

    async def _index_workspaces(
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
                _OWN_INDEX_PREFIX,
            )
        )
        keep = {own_index_name(w) for w, n in sizes.items() if n >= min_size / 2}
        dropped = 0
        for name, valid in existing.items():
            if name not in keep or not valid:
                await conn.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"')
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
            await conn.execute(statement)
            self._paths.pop(workspace, None)
            built.append(workspace)
            log.info(
                "memory: workspace %s (%d vectors) has an HNSW index of its own, built in %.1f s",
                workspace,
                n,
                time.monotonic() - started,
            )
        return OwnIndexes(built=tuple(built), dropped=dropped)

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
                return list(await conn.fetch(_words_sql(kinds=bool(kinds)), *params))

            if vector is None:
                return _candidates([], await by_words(0.0))
            # Everything but the vector query is done while the vector may still be on its way.
            await self._check_model(conn, model, dims)
            found_by_words = await by_words(fulltext_min_match) if use_text else []
            if exact is None:
                exact = await self._search_path(conn, workspace_id, exact_below) == "exact"
            await conn.execute(_vector_settings(exact, ef_search=ef_search, candidates=candidates))
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
                _vector_sql(exact=exact, kinds=bool(kinds)), *params
            )
        return _candidates(found_by_meaning, found_by_words)

    async def _check_model(self, conn: asyncpg.Connection, model: str, dims: int) -> None:
        """Raise EmbeddingModelMismatch unless the stored vectors are `model`'s."""
        record = await self._record(conn)
        if record is None:
            raise EmbeddingModelMismatch(
                stored_model="(nothing yet)", stored_dims=0, model=model, dims=dims
            )
        mismatch = self._check(record, model, dims)
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
            record = await self._record(conn)
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
            SELECT {_ITEM_COLUMNS} FROM memory_items i
            WHERE i.workspace_id = $1 AND i.kind = 'message' AND i.created_at < $2
                  AND i.chunk = 0
            ORDER BY i.created_at, i.id LIMIT $3
            """,
            workspace_id,
            before,
            limit,
        )
        return [_item(r) for r in rows]

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
            SELECT {_ITEM_COLUMNS} FROM memory_unembedded u JOIN memory_items i ON i.id = u.item_id
            ORDER BY u.item_id LIMIT $1
            """,
            limit,
        )
        return [_item(r) for r in rows]

    async def add_vectors(
        self, items: Sequence[MemoryItem], vectors: Vectors, *, model: str, dims: int
    ) -> int:
        """Vectors for items stored without one. Returns how many were written."""
        async with self._pool.acquire() as conn, conn.transaction():
            record = await self._record(conn, lock="FOR SHARE")
            mismatch = self._check(record, model, dims)
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

    # -- reindex -----------------------------------------------------------------------------

    async def reindex_begin(self, dims: int) -> None:
        """A fresh `memory_vectors_next` of `dims` dimensions (a crashed run's is dropped)."""
        async with self._pool.acquire() as conn:
            await conn.execute(f"DROP TABLE IF EXISTS {NEXT_VECTORS}")
            await conn.execute(_vector_table_sql(NEXT_VECTORS, dims, foreign_key=False))

    async def items_after(self, after_id: int, *, limit: int) -> list[tuple[int, str, str, str]]:
        """(id, workspace_id, kind, text to embed) of items with a greater id, in id order."""
        rows = await self._pool.fetch(
            "SELECT id, workspace_id, kind, text, context FROM memory_items WHERE id > $1 "
            "ORDER BY id LIMIT $2",
            after_id,
            limit,
        )
        return [(r[0], r[1], r[2], embedding_text(r[3], r[4])) for r in rows]

    @staticmethod
    async def _copy_next(
        conn: asyncpg.Connection, rows: Sequence[tuple[int, str, str, str]], vectors: Vectors
    ) -> None:
        await conn.copy_records_to_table(
            NEXT_VECTORS,
            records=[(r[0], r[1], r[2], vectors[i]) for i, r in enumerate(rows)],
            columns=["item_id", "workspace_id", "kind", "embedding"],
        )

    async def reindex_write(
        self, rows: Sequence[tuple[int, str, str, str]], vectors: Vectors
    ) -> None:
        async with self._pool.acquire() as conn:
            await self._copy_next(conn, rows, vectors)

    async def reindex_build_index(self, *, maintenance_work_mem: str) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(f"SET maintenance_work_mem = '{maintenance_work_mem}'")
            try:
                await conn.execute(hnsw_index_sql(NEXT_VECTORS))
            finally:
                await conn.execute("RESET maintenance_work_mem")

    async def reindex_swap(
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
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _OWN_INDEX_LOCK)
            # The record first, then the items (apply() locks in the same order: no deadlock).
            record = await self._record(conn, lock="FOR UPDATE")
            await conn.execute("LOCK TABLE memory_items IN SHARE MODE")
            late = [
                (r[0], r[1], r[2], embedding_text(r[3], r[4]))
                for r in await conn.fetch(
                    "SELECT id, workspace_id, kind, text, context FROM memory_items WHERE id > $1 "
                    "ORDER BY id",
                    after_id,
                )
            ]
            if late:
                vectors = await embed([r[3] for r in late])
                await self._copy_next(conn, late, vectors)
            # Items deleted (redacted, edited, pruned) while the pass ran.
            await conn.execute(
                f"DELETE FROM {NEXT_VECTORS} n "
                "WHERE NOT EXISTS (SELECT 1 FROM memory_items i WHERE i.id = n.item_id)"
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
                """
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
        self._paths.clear()
        return len(late)
