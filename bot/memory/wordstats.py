"""Okapi BM25 for the search by words, with statistics per workspace.

PostgreSQL's ts_rank_cd knows neither how rare a word is (no IDF) nor how long a text is: a
question's common word counts as much as its rare one, and a long message full of common words
wins. BM25 (k1 1.2, b 0.75) weighs each of the question's words by its IDF in the workspace and
each text's count of it by the text's length against the workspace's average.

The statistics are read when a question needs them, never maintained on write (no hot rows for
common words, no write amplification). A word's document frequency in a workspace of fewer than
COUNT_BELOW items is counted (through the workspace's rows: a few ms). In a bigger one, a word
that PostgreSQL's statistics list among the column's most common (pg_stats.most_common_elems,
kept by ANALYZE) gets its share of the whole table times the workspace's size — counting a
common word's matches costs a walk of its whole posting list (at 1M items the words half's p95
was 44-56 ms that way) — and any other word is counted through the GIN index (cheap: it is rare),
capped at DF_CAP. The shares are the table's, not the workspace's: a word common in one big
workspace weighs a little less in another big one than it should (statistics kept per workspace
on write would be exact, at a cost on every write). The workspace's size is counted to
SIZE_CAP (an index-only count); the average length (distinct words of a text, as tsvector's
length) is taken over LENGTH_SAMPLE of its items. All are kept STALE_AFTER seconds in the
process.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

K1 = 1.2
B = 0.75
DF_CAP = 5_000
COUNT_BELOW = 5_000
SIZE_CAP = 50_000
LENGTH_SAMPLE = 1_000
STALE_AFTER = 300.0
MAX_CACHED = 200_000


def idf(n: int, df: int) -> float:
    """Okapi BM25's IDF (with +1 inside the log, as Lucene: never negative)."""
    return math.log((n - df + 0.5) / (df + 0.5) + 1)


def bm25(tf: int, length: float, avg_length: float, weight: float) -> float:
    """One word's part of a text's score (the same formula as the SQL in store._words_sql)."""
    norm = K1 * (1 - B + B * length / max(avg_length, 1e-9))
    return weight * tf * (K1 + 1) / (tf + norm)


@dataclass(frozen=True, slots=True)
class Weights:
    idf: tuple[float, ...]
    """Per word of the question, in its order."""
    avg_length: float


def tsquery_lexeme(lexeme: str) -> str:
    """The tsquery text that matches exactly this lexeme."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


class WordStatistics:
    def __init__(self) -> None:
        self._df: dict[tuple[str, str], tuple[int, float]] = {}
        self._size: dict[str, tuple[int, float, float]] = {}
        self._common: tuple[dict[str, float], float] = ({}, -STALE_AFTER)

    def forget(self) -> None:
        self._df.clear()
        self._size.clear()
        self._common = ({}, -STALE_AFTER)

    async def _common_words(self, conn: asyncpg.Connection, now: float) -> dict[str, float]:
        """The column's most common words and the share of items holding each."""
        common, read_at = self._common
        if now - read_at > STALE_AFTER:
            row = await conn.fetchrow(
                "SELECT most_common_elems::text::text[] AS words, most_common_elem_freqs AS f "
                "FROM pg_stats WHERE schemaname = current_schema() "
                "AND tablename = 'memory_items' AND attname = 'tsv'"
            )
            words = row["words"] if row and row["words"] else []
            shares = row["f"] if row and row["f"] else []
            common = dict(zip(words, shares, strict=False))  # f ends with 3 summary values
            self._common = (common, now)
        return common

    async def weights(
        self, conn: asyncpg.Connection, workspace_id: str, lexemes: Sequence[str]
    ) -> Weights:
        """The IDF of each word (`lexemes`) in the workspace, and its texts' average length."""
        now = time.monotonic()
        if len(self._df) > MAX_CACHED:  # before this question's words go in
            self._df.clear()
        size = self._size.get(workspace_id)
        if size is None or now - size[2] > STALE_AFTER:
            row = await conn.fetchrow(
                """
                SELECT (SELECT count(*) FROM (SELECT 1 FROM memory_items
                                              WHERE workspace_id = $1 LIMIT $2) s) AS n,
                       (SELECT coalesce(avg(length(tsv)), 1) FROM (
                            SELECT tsv FROM memory_items WHERE workspace_id = $1 LIMIT $3) s)
                       AS avg_length
                """,
                workspace_id,
                SIZE_CAP,
                LENGTH_SAMPLE,
            )
            size = (int(row["n"]), float(row["avg_length"]), now)
            self._size[workspace_id] = size
        n = max(size[0], 1)
        common = await self._common_words(conn, now) if n >= COUNT_BELOW else {}
        for word in lexemes:
            if word in common:
                self._df[(workspace_id, word)] = (round(common[word] * n), now)
        missing = [
            w
            for w in lexemes
            if (cached := self._df.get((workspace_id, w))) is None or now - cached[1] > STALE_AFTER
        ]
        if missing:
            counts = await conn.fetchval(
                """
                SELECT array(
                    SELECT (SELECT count(*) FROM (SELECT 1 FROM memory_items
                                                  WHERE workspace_id = $1 AND tsv @@ x.q::tsquery
                                                  LIMIT $3) s)
                    FROM unnest($2::text[]) WITH ORDINALITY AS x(q, i) ORDER BY x.i)
                """,
                workspace_id,
                [tsquery_lexeme(w) for w in missing],
                DF_CAP,
            )
            for word, df in zip(missing, counts, strict=True):
                self._df[(workspace_id, word)] = (int(df), now)
        return Weights(
            tuple(idf(n, min(self._df[(workspace_id, w)][0], n)) for w in lexemes), size[1]
        )
