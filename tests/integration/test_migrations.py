"""The migration runner on the real PostgreSQL: vector first, in order, once, atomic, and never
onto a newer schema."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from bot.core import db
from bot.core.errors import MigrationError


async def test_fresh_database_gets_every_migration_once(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        applied = await db.migrate(conn)
        assert applied == [m.version for m in db.discover_migrations()]
        assert await db.migrate(conn) == []
        assert await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        assert await conn.fetchval("SELECT to_regclass('inbox_events') IS NOT NULL")
    finally:
        await conn.close()


async def test_pool_connections_know_vector_and_jsonb(database_url: str) -> None:
    pool = await db.connect(database_url, min_size=1, max_size=2)
    try:
        assert await pool.fetchval("SELECT $1::jsonb", {"a": [1]}) == {"a": [1]}
        vector = await pool.fetchval("SELECT '[1,2,3]'::vector")
        assert vector.to_list() == [1.0, 2.0, 3.0]
    finally:
        await pool.close()


async def test_a_statement_that_hangs_is_cancelled_unless_known_to_be_long(
    database_url: str,
) -> None:
    pool = await db.connect(database_url, min_size=1, max_size=1, command_timeout=0.3)
    try:
        with pytest.raises(TimeoutError):
            await pool.execute("SELECT pg_sleep(5)")
        # The connection is usable again at once: the server stopped the statement.
        assert await pool.fetchval("SELECT 1") == 1
        await pool.execute("SELECT pg_sleep(0.5)", timeout=db.LONG_COMMAND)
    finally:
        await pool.close()


async def test_newer_schema_is_refused(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await db.migrate(conn)
        latest = db.discover_migrations()[-1].version
        await conn.execute(
            "INSERT INTO doryo_schema_version (version, name) VALUES ($1, 'from_the_future')",
            latest + 1,
        )
        with pytest.raises(MigrationError, match="newer than this Doryo knows"):
            await db.migrate(conn)
    finally:
        await conn.close()


async def test_a_failing_migration_leaves_nothing_behind(
    database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "0001_good.sql").write_text("CREATE TABLE good (id int);")
    (tmp_path / "0002_bad.sql").write_text(
        "CREATE TABLE half (id int); SELECT no_such_function();"
    )
    migrations = db.discover_migrations(tmp_path)
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(asyncpg.PostgresError):
            await db.migrate(conn, migrations)
        assert await db.schema_version(conn) == 1
        assert await conn.fetchval("SELECT to_regclass('good') IS NOT NULL")
        assert not await conn.fetchval("SELECT to_regclass('half') IS NOT NULL")
    finally:
        await conn.close()


def test_gaps_and_bad_names_are_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("")
    (tmp_path / "0003_c.sql").write_text("")
    with pytest.raises(MigrationError, match="0002 is missing"):
        db.discover_migrations(tmp_path)
    (tmp_path / "0003_c.sql").unlink()
    (tmp_path / "2_b.sql").write_text("")
    with pytest.raises(MigrationError, match="NNNN_name.sql"):
        db.discover_migrations(tmp_path)


async def test_unreachable_database_is_a_clear_error() -> None:
    with pytest.raises(db.DatabaseError, match="cannot connect to the database"):
        await db.connect("postgresql://nobody@127.0.0.1:1/none")
