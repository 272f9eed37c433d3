"""A workspace as a portable file: `doryo export` writes it, `doryo import` reads it back.

JSON lines, one record per line. The first is the header:
    {"type": "doryo_export", "format": 1, "schema": 10, "workspace_id": "…", "exported_at": "…",
     "with_vectors": false}
then every row of the workspace, table by table (RECORDS, in an order that import can insert),
each as the table's columns plus `"type"`. Columns are read from the schema, so a column added
later is exported and imported without a change here; generated columns (the full-text
vector) are left out and made again. docs/export.md describes each type's fields.

Export streams (a server-side cursor, 1,000 rows at a time): memory stays flat whatever the
workspace's size. Import runs in one transaction into a database that does not hold the
workspace yet: all of it, or none. IDs and Matrix IDs stay as they were.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import asyncpg

from bot.core.errors import DoryoError

FORMAT = 1
HEADER = "doryo_export"
PREFETCH = 1000


@dataclass(frozen=True, slots=True)
class Record:
    type: str
    table: str
    where: str
    """Rows of the workspace ($1): a condition on the table, aliased `t`."""


_SESSION_ROOMS = "t.room_id IN (SELECT room_id FROM sessions WHERE workspace_id = $1)"
_OWN = "t.workspace_id = $1"

RECORDS: tuple[Record, ...] = (
    Record("workspace", "workspaces", "t.id = $1"),
    Record("member", "workspace_members", _OWN),
    Record("direct_choice", "direct_workspace", _OWN),
    Record("session", "sessions", _OWN),
    Record("message", "messages", _SESSION_ROOMS),
    Record("memory", "memory_items", _OWN),
    Record("document", "documents", _OWN),
    Record("action", "actions", _OWN),
    Record("tool_run", "tool_runs", _OWN),
    Record("task", "tasks", _OWN),
    Record("followup", "followups", _OWN),
    Record("usage", "llm_usage", _OWN),
)
VECTORS = Record("memory_vector", "memory_vectors", _OWN)
"""Only with --with-vectors: they are large, and the embedding model may change on the way."""

LEFT_OUT = {
    "workspace_invites": "invite codes are bearer secrets of this install; make new ones",
    "letta_agents": "agents live on a Letta server; they are made again on first use",
    "pending_adoptions": "rooms waiting for their admin's agreement; they ask again",
    "retention_runs": "the last retention run of this install",
    "workspace_deletions": "requests to delete the workspace, on this install",
}
"""Workspace tables not exported, and why (tests check that no table is forgotten)."""


async def _columns(conn: asyncpg.Connection, table: str) -> list[str]:
    rows = await conn.fetch(
        """
        SELECT column_name FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = $1 AND is_generated = 'NEVER'
        ORDER BY ordinal_position
        """,
        table,
    )
    return [r["column_name"] for r in rows]


def _select(record: Record, columns: list[str]) -> str:
    # A function takes at most 100 arguments: jsonb_build_object of 50 columns at a time.
    parts = [
        "jsonb_build_object(" + ", ".join(f"'{c}', t.{c}" for c in columns[i : i + 50]) + ")"
        for i in range(0, len(columns), 50)
    ]
    return f"SELECT ({' || '.join(parts)})::text FROM {record.table} t WHERE {record.where}"


async def _exists(conn: asyncpg.Connection, table: str) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table))


async def export_lines(
    conn: asyncpg.Connection, workspace_id: str, *, with_vectors: bool = False
) -> AsyncIterator[tuple[str, str]]:
    """(type, line without its newline) for each record, the header first. Runs in a
    repeatable-read transaction: one consistent picture of the workspace, however long it
    takes."""
    from bot.core.db import schema_version

    if not await conn.fetchval("SELECT 1 FROM workspaces WHERE id = $1", workspace_id):
        raise DoryoError(f"there is no workspace {workspace_id} (see `!ws` or the admin API)")
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        yield HEADER, json.dumps(
            {
                "type": HEADER,
                "format": FORMAT,
                "schema": await schema_version(conn),
                "workspace_id": workspace_id,
                "exported_at": datetime.now(UTC).isoformat(),
                "with_vectors": with_vectors,
            }
        )
        records = list(RECORDS)
        if with_vectors and await _exists(conn, VECTORS.table):
            records.append(VECTORS)
        for record in records:
            query = _select(record, await _columns(conn, record.table))
            prefix = f'{{"type": {json.dumps(record.type)}, '
            async for row in conn.cursor(query, workspace_id, prefetch=PREFETCH):
                yield record.type, prefix + row[0][1:]


async def export_to(
    conn: asyncpg.Connection, workspace_id: str, out: IO[str], *, with_vectors: bool = False
) -> dict[str, int]:
    """Write the export to `out`; returns how many records of each type."""
    counts: dict[str, int] = {}
    async for kind, line in export_lines(conn, workspace_id, with_vectors=with_vectors):
        out.write(line + "\n")
        counts[kind] = counts.get(kind, 0) + 1
    counts.pop(HEADER, None)
    return counts


async def export_file(
    conn: asyncpg.Connection, workspace_id: str, path: Path
) -> dict[str, int]:
    """The export, gzip-compressed, written to `path` as it is read (for `!ws export`)."""
    with gzip.open(path, "wt", encoding="utf-8") as file:
        return await export_to(conn, workspace_id, file)


async def import_from(conn: asyncpg.Connection, lines: Iterable[str]) -> dict[str, int]:
    """Read an export into this database, in one transaction. Refused if the workspace is
    here already, or the file is not an export this version can read."""
    from bot.core.db import schema_version

    tables = {r.type: r.table for r in (*RECORDS, VECTORS)}
    counts: dict[str, int] = {}
    columns: dict[str, list[str]] = {}
    it = iter(lines)
    try:
        header = json.loads(next(it))
    except (StopIteration, json.JSONDecodeError):
        raise DoryoError("not a Doryo export: the first line is not its header") from None
    if not isinstance(header, dict) or header.get("type") != HEADER:
        raise DoryoError("not a Doryo export: the first line is not its header")
    if header.get("format") != FORMAT:
        raise DoryoError(f"export format {header.get('format')}; this version reads {FORMAT}")
    if header.get("schema", 0) > await schema_version(conn):
        raise DoryoError(
            f"the export is of schema {header['schema']}, newer than this database's: "
            "upgrade Doryo first"
        )
    workspace_id = header.get("workspace_id")
    if await conn.fetchval("SELECT 1 FROM workspaces WHERE id = $1", workspace_id):
        raise DoryoError(f"workspace {workspace_id} is here already; nothing was imported")
    async with conn.transaction():
        for n, line in enumerate(it, start=2):
            if not line.strip():
                continue
            try:
                row: dict[str, Any] = json.loads(line)
                table = tables[row.pop("type")]
            except (json.JSONDecodeError, KeyError, AttributeError, TypeError):
                raise DoryoError(f"line {n}: not a record of a Doryo export") from None
            if table == VECTORS.table and not await _exists(conn, table):
                continue  # no vectors table here yet: `doryo reindex` embeds them
            if table not in columns:
                columns[table] = await _columns(conn, table)
            names = [c for c in columns[table] if c in row]
            listed = ", ".join(names)
            await conn.execute(
                f"INSERT INTO {table} ({listed}) OVERRIDING SYSTEM VALUE "
                f"SELECT {listed} FROM jsonb_populate_record(NULL::{table}, $1::jsonb)",
                json.dumps(row),
            )
            counts[table] = counts.get(table, 0) + 1
        # Memories without their vectors are embedded by the running bot (Indexer.backfill).
        without = ""
        if await _exists(conn, VECTORS.table):
            without = f" AND NOT EXISTS (SELECT 1 FROM {VECTORS.table} v WHERE v.item_id = i.id)"
        await conn.execute(
            "INSERT INTO memory_unembedded (item_id) SELECT id FROM memory_items i "
            f"WHERE i.workspace_id = $1{without}",
            workspace_id,
        )
        # Identity columns continue after the imported IDs.
        for table in counts:
            for column in await conn.fetch(
                """
                SELECT column_name FROM information_schema.columns
                WHERE table_schema = current_schema() AND table_name = $1
                  AND (is_identity = 'YES' OR column_default LIKE 'nextval%')
                """,
                table,
            ):
                name = column["column_name"]
                await conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', '{name}'), "
                    f"(SELECT max({name}) FROM {table}))"
                )
    return counts
