"""`doryo export` of a big workspace: time, and the process's peak memory above idle.

    .venv/bin/python bench/export.py [--messages 1000000]

A workspace of N history messages and N/2 memories (made in PostgreSQL with generate_series) in an
embedded PostgreSQL under a temporary directory. The export (bot.data.portable, gzip as `--out
x.gz` writes it) is timed against a baseline measured in the same run: PostgreSQL's own `COPY ...
TO STDOUT` of the same rows as text into a gzip file, the fastest the data can leave the
database. Peak memory is the process's max RSS after the export minus before it (the target:
flat, under 200 MB above idle, whatever N).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import resource
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.core import db  # noqa: E402
from bot.core.embedded_pg import start_embedded, stop_embedded  # noqa: E402
from bot.data.portable import export_to  # noqa: E402

WORKSPACE = "ws_bench"


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def fill(pool: asyncpg.Pool, messages: int) -> None:
    await pool.execute(
        """
        INSERT INTO workspaces (id, space_id, name, host, created_by_bot)
        VALUES ('ws_bench', '!space:bench', 'Bench', '@host:bench', true);
        INSERT INTO sessions (room_id, workspace_id, topic, started_by)
        SELECT '!room' || r || ':bench', 'ws_bench', 'Room ' || r, '@host:bench'
        FROM generate_series(1, 20) r;
        """
    )
    await pool.execute(
        f"""
        INSERT INTO messages (room_id, seq, event_id, sender, kind, body, sent_at)
        SELECT '!room' || (n % 20 + 1) || ':bench', n / 20 + 1, '$m' || n, '@user' || (n % 50)
               || ':bench', 'user', 'Message number ' || n || ' about the launch plan and '
               || 'what the team decided on that day, with some more words', now()
        FROM generate_series(0, {messages - 1}) n;
        INSERT INTO memory_items (workspace_id, kind, text, room_id, event_id, sender)
        SELECT 'ws_bench', 'message', 'Message number ' || n || ' about the launch plan',
               '!room' || (n % 20 + 1) || ':bench', '$m' || n, '@user' || (n % 50) || ':bench'
        FROM generate_series(0, {messages // 2 - 1}) n;
        """
    )


async def main(messages: int) -> None:
    with tempfile.TemporaryDirectory(prefix="doryo-bench-export-") as folder:
        url, server = await start_embedded(Path(folder) / "pg", stop_at_exit=False)
        try:
            pool = await db.connect(url, min_size=1, max_size=2)
            started = time.perf_counter()
            await fill(pool, messages)
            print(
                f"made {messages:,} messages and {messages // 2:,} memories "
                f"in {time.perf_counter() - started:.1f} s"
            )
            idle = max_rss_mb()

            async with pool.acquire() as conn:
                started = time.perf_counter()
                with gzip.open(Path(folder) / "copy.gz", "wb") as out:

                    async def write(data: bytes) -> None:
                        out.write(data)

                    for table, where in (
                        ("messages", "room_id LIKE '%:bench'"),
                        ("memory_items", "workspace_id = 'ws_bench'"),
                    ):
                        await conn.copy_from_query(
                            f"SELECT * FROM {table} WHERE {where}", output=write
                        )
                baseline = time.perf_counter() - started
                copy_size = (Path(folder) / "copy.gz").stat().st_size

                started = time.perf_counter()
                with gzip.open(Path(folder) / "export.jsonl.gz", "wt", encoding="utf-8") as file:
                    counts = await export_to(conn, WORKSPACE, file)
                took = time.perf_counter() - started
            size = (Path(folder) / "export.jsonl.gz").stat().st_size
            peak = max_rss_mb()
            await pool.close()
        finally:
            await stop_embedded(server)
    records = sum(counts.values())
    print(f"COPY baseline    {baseline:7.1f} s   {copy_size / 1e6:7.1f} MB gzip")
    print(
        f"doryo export     {took:7.1f} s   {size / 1e6:7.1f} MB gzip   {records:,} records   "
        f"{records / took:,.0f} records/s   ×{took / baseline:.2f} of the baseline"
    )
    print(
        f"peak memory      {peak - idle:7.1f} MB above idle ({idle:.0f} MB idle, "
        f"{peak:.0f} MB peak)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    asyncio.run(main(parser.parse_args().messages))
