"""BM25's statistics per workspace: a word in every text weighs little, a rare one much — counted
in a small workspace, from PostgreSQL's statistics (common words) in a big one."""

from __future__ import annotations

import asyncpg
import pytest

from bot.memory import wordstats
from bot.memory.wordstats import COUNT_BELOW, WordStatistics


async def add(pool: asyncpg.Pool, workspace: str, count: int, text: str) -> None:
    await pool.execute(
        "INSERT INTO memory_items (workspace_id, kind, text) "
        "SELECT $1, 'message', replace($3, '#', n::text) FROM generate_series(1, $2) n",
        workspace,
        count,
        text,
    )


async def test_common_words_weigh_little_and_rare_ones_much(pool: asyncpg.Pool) -> None:
    await add(pool, "small", 200, "the deploy pipeline ran step #")
    await add(pool, "small", 1, "the zanzibar pipeline")
    await add(pool, "big", COUNT_BELOW + 500, "the deploy pipeline ran step #")
    await add(pool, "big", 3, "the zanzibar pipeline")
    # Elsewhere "zanzibar" is everywhere: the small workspace's count does not see it.
    await add(pool, "elsewhere", 300, "zanzibar zanzibar")
    await pool.execute("ANALYZE memory_items")
    common = await pool.fetchval(
        "SELECT most_common_elems::text::text[] FROM pg_stats "
        "WHERE tablename = 'memory_items' AND attname = 'tsv'"
    )
    assert "deploy" in common and "zanzibar" in common
    stats = WordStatistics()
    async with pool.acquire() as conn:
        small = await stats.weights(conn, "small", ["deploy", "zanzibar", "absent"])
        big = await stats.weights(conn, "big", ["deploy", "pipelin", "absent"])
    deploy, zanzibar, absent = small.idf
    assert deploy < 0.01 < 4 < zanzibar < absent, small  # counted: zanzibar is rare here
    deploy, pipeline, absent = big.idf
    assert max(deploy, pipeline) < 0.2 < 8 < absent, big  # from the table's statistics
    assert small.avg_length > 3 and big.avg_length > 3


async def test_a_full_cache_is_emptied_before_a_question_not_during_it(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    await add(pool, "big", COUNT_BELOW + 10, "the deploy pipeline ran step #")
    await pool.execute("ANALYZE memory_items")
    monkeypatch.setattr(wordstats, "MAX_CACHED", 1)
    stats = WordStatistics()
    async with pool.acquire() as conn:
        for words in (["deploy", "absent"], ["deploy", "pipelin", "other"], ["deploy", "x"]):
            weights = await stats.weights(conn, "big", words)
            assert len(weights.idf) == len(words)
