"""PostgreSQL: the connection pool and the forward-only migration runner.

Migrations are `migrations/NNNN_name.sql`, numbered from 0001 without gaps. Each runs in its own
transaction and is recorded in `doryo_schema_version`. A database whose schema is newer than the
newest migration this code knows is refused: running old code on it could corrupt it.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import asyncpg
from pgvector.asyncpg import register_vector

from bot.core.errors import DatabaseError, MigrationError

log = logging.getLogger(__name__)

_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# pg_advisory_lock key, so two processes starting at once don't migrate at the same time.
_MIGRATION_LOCK = 0x646F72796F  # "doryo"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations_dir() -> Path:
    return Path(str(resources.files("doryo_migrations")))


def discover_migrations(directory: Path | None = None) -> list[Migration]:
    """The migrations in `directory`, in order. Gaps and duplicate numbers are errors."""
    directory = directory or migrations_dir()
    found = []
    for path in directory.iterdir():
        if path.suffix != ".sql":
            continue
        match = _MIGRATION_FILE.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationError(
                f"migration {expected:04d} is missing "
                f"(found {migration.version:04d}_{migration.name})"
            )
    return found


async def schema_version(conn: asyncpg.Connection) -> int:
    exists = await conn.fetchval("SELECT to_regclass('doryo_schema_version') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM doryo_schema_version"))


async def migrate(
    conn: asyncpg.Connection, migrations: list[Migration] | None = None
) -> list[int]:
    """Bring the schema up to date. Returns the versions applied now."""
    migrations = discover_migrations() if migrations is None else migrations
    latest = migrations[-1].version if migrations else 0
    try:
        # Before anything else: the pgvector codec can only be registered once it exists.
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except asyncpg.PostgresError as e:
        raise MigrationError(
            f"the database has no pgvector extension ({e}); install pgvector, "
            "or set database.url: embedded to use the bundled PostgreSQL"
        ) from None
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS doryo_schema_version (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        current = await schema_version(conn)
        if current > latest:
            raise MigrationError(
                f"the database schema is at version {current}, newer than this Doryo knows "
                f"({latest}); upgrade Doryo instead of running an older one"
            )
        applied = []
        for migration in migrations:
            if migration.version <= current:
                continue
            log.info("applying migration %04d_%s", migration.version, migration.name)
            async with conn.transaction():
                if _has_statements(migration.sql):  # PostgreSQL refuses an empty query
                    await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO doryo_schema_version (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            applied.append(migration.version)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)


def _has_statements(sql: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in sql.splitlines())


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await register_vector(conn)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Given back to the pool, a connection is not reset by a query of its own.

    asyncpg's default reset (RESET ALL, UNLISTEN *, CLOSE ALL, advisory unlock) is one more
    round trip after every statement a pool method runs: it doubled the time of the short
    queries the bot lives on. The bot leaves nothing in a session to reset: its SETs are LOCAL
    or undone where they are made, it holds no session locks or LISTENs on pooled connections.
    asyncpg still rolls back a transaction left open, without this hook's help.
    """


LONG_COMMAND = 86_400.0
"""The timeout of statements known to take long on big data (index builds, a workspace's
deletion): a day, not the pool's command_timeout."""


async def connect(
    url: str, *, min_size: int = 2, max_size: int = 10, command_timeout: float | None = 60
) -> asyncpg.Pool:
    """Migrate the database, then open a pool whose connections know jsonb and vector.
    `command_timeout`: seconds a statement may take (None: no bound, for offline commands)."""
    try:
        conn = await asyncpg.connect(url, timeout=10)
    except (OSError, asyncpg.PostgresError) as e:
        raise DatabaseError(f"cannot connect to the database: {e}") from None
    try:
        await migrate(conn)
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        timeout=10,
        command_timeout=command_timeout,
    )
    assert pool is not None
    return pool
