"""The memory's SQL, built by pure functions (tested without a database): the vectors tables
and their HNSW indexes, the words of a question as tsqueries, and the two candidate queries."""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Sequence

from bot.memory.records import ITEM_COLUMNS, ITEM_FIELDS
from bot.memory.wordstats import K1, B, tsquery_lexeme

VECTORS = "memory_vectors"
NEXT_VECTORS = "memory_vectors_next"
OWN_INDEX_PREFIX = f"{VECTORS}_ws_"

# Full-text search: the newest items holding any of the question's words (lexemes) are found
# through the GIN index or the newest rows first, whichever the planner sees is cheaper for
# these words; of those, the ones holding at least a share of the words (any k of n, written
# out as a tsquery) are ranked. (The k-of-n query is not the index condition: its selectivity is
# misestimated, and the planner then walks far too many rows.) A question longer than this many
# distinct words keeps its longest ones, a bound on the query.
MAX_QUERY_WORDS = 10


def vector_table_sql(table: str, dims: int, *, foreign_key: bool) -> str:
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


def own_index_name(workspace_id: str) -> str:
    """The name of a workspace's own HNSW index: a digest, as workspace IDs (room IDs) may be
    longer than a name may be, and hold any character."""
    return OWN_INDEX_PREFIX + hashlib.blake2b(workspace_id.encode(), digest_size=8).hexdigest()


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


def vector_settings(exact: bool, *, ef_search: int, candidates: int) -> str:
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


def vector_sql(*, exact: bool, kinds: bool) -> str:
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
        SELECT {ITEM_COLUMNS}, v.distance
        FROM v JOIN memory_items i ON i.id = v.item_id
        WHERE i.workspace_id = $1
    """


def words_sql(*, kinds: bool) -> str:
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
        SELECT {ITEM_COLUMNS}, t.text_score,
               row_number() OVER (ORDER BY t.text_score DESC, t.id DESC) AS text_rank
        FROM t JOIN memory_items i ON i.id = t.id
        WHERE i.workspace_id = $1
    """


def insert_items_sql() -> str:
    """An INSERT of one memory_items row, its values in ITEM_FIELDS order."""
    placeholders = ", ".join(f"${n}" for n in range(1, len(ITEM_FIELDS) + 1))
    return f"INSERT INTO memory_items ({', '.join(ITEM_FIELDS)}) VALUES ({placeholders})"
