"""Okapi BM25 for the search by words, with statistics per workspace.

PostgreSQL's ts_rank_cd knows neither how rare a word is (no IDF) nor how long a text is: a
question's common word counts as much as its rare one, and a long message full of common words
wins. BM25 (k1 1.2, b 0.75) weighs each of the question's words by its IDF in the workspace and
each text's count of it by the text's length against the workspace's average.

The statistics are read when a question needs them, never maintained on write: a word's
document frequency is a count of the workspace's items holding it (the GIN index), capped at
DF_CAP (beyond it a word is common, and an exact count costs a visit of each match: at 1M items
a cap of 50,000 made the words half's p95 56 ms); the workspace's size is counted to SIZE_CAP
(an index-only count); the average length (distinct words of a text, as tsvector's length) is
taken over LENGTH_SAMPLE of its items. All are kept STALE_AFTER seconds in
the process: a workspace's statistics change slowly, and a question's words repeat.
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


class WordStatistics:
    def __init__(self) -> None:
        self._df: dict[tuple[str, str], tuple[int, float]] = {}
        self._size: dict[str, tuple[int, float, float]] = {}

    def forget(self) -> None:
        self._df.clear()
        self._size.clear()

    async def weights(
        self, conn: asyncpg.Connection, workspace_id: str, queries: Sequence[str]
    ) -> Weights:
        """The IDF of each word (`queries`: one tsquery text per word) in the workspace, and
        its texts' average length."""
        now = time.monotonic()
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
        missing = [
            q
            for q in queries
            if (cached := self._df.get((workspace_id, q))) is None or now - cached[1] > STALE_AFTER
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
                missing,
                DF_CAP,
            )
            if len(self._df) > MAX_CACHED:
                self._df.clear()
            for q, df in zip(missing, counts, strict=True):
                self._df[(workspace_id, q)] = (int(df), now)
        n = max(size[0], 1)
        return Weights(
            tuple(idf(n, min(self._df[(workspace_id, q)][0], n)) for q in queries), size[1]
        )
