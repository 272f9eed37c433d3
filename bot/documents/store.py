"""The documents table: each file shared in a session, and the state of its reading.

A row is the reading's job as well as its record: made 'queued' when the file's event is seen,
'reading' while read (a restart picks up both), then 'done' with its pieces in memory, or
'skipped' with the reason the room was told. Finishing writes the pieces, removes the version
it replaces and marks the row done in one transaction that first locks the row: a redaction
(which deletes the row) either comes before, and the reading stores nothing, or after, and
deletes what was stored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import asyncpg

from bot.memory.embeddings import Vectors
from bot.memory.records import Insert, NewItem
from bot.memory.store import MemoryStore

MAX_ATTEMPTS = 3
"""Readings started (a crash or an outage mid-way starts another) before a file is skipped."""


@dataclass(frozen=True, slots=True)
class Document:
    id: int
    workspace_id: str
    event_id: str
    room_id: str
    sender: str
    shared_at: datetime
    name: str
    mimetype: str | None
    size: int | None
    content: dict[str, Any]
    status: str
    reason: str | None
    pages: int | None
    pieces: int
    attempts: int
    notice_event_id: str | None
    replaced: str | None
    updated_at: datetime


_COLUMNS = ", ".join(f.name for f in fields(Document))


def _document(row: asyncpg.Record) -> Document:
    values = {name: row[name] for name in _COLUMNS.split(", ")}
    content = values["content"]
    values["content"] = json.loads(content) if isinstance(content, str) else dict(content)
    return Document(**values)


class DocumentStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def add(
        self,
        *,
        workspace_id: str,
        event_id: str,
        room_id: str,
        sender: str,
        shared_at: datetime,
        name: str,
        mimetype: str | None,
        size: int | None,
        content: Mapping[str, Any],
    ) -> bool:
        """Queue a shared file; False if it was queued before (the event seen again)."""
        status = await self._pool.execute(
            """
            INSERT INTO documents (workspace_id, event_id, room_id, sender, shared_at, name,
                                   mimetype, size, content)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)
            ON CONFLICT DO NOTHING
            """,
            workspace_id,
            event_id,
            room_id,
            sender,
            shared_at,
            name,
            mimetype,
            size,
            json.dumps(dict(content)),
        )
        return str(status).endswith(" 1")

    async def claim_next(self) -> Document | None:
        """The oldest file waiting to be read (or whose reading a crash cut short), now
        'reading'. One process reads at a time (docs/documents.md)."""
        row = await self._pool.fetchrow(
            f"""
            UPDATE documents SET status = 'reading', attempts = attempts + 1, updated_at = now()
            WHERE (workspace_id, event_id) = (
                SELECT workspace_id, event_id FROM documents
                WHERE status IN ('queued', 'reading')
                ORDER BY shared_at, event_id LIMIT 1 FOR UPDATE SKIP LOCKED)
            RETURNING {_COLUMNS}
            """
        )
        return _document(row) if row is not None else None

    async def waiting(self) -> int:
        return int(
            await self._pool.fetchval(
                "SELECT count(*) FROM documents WHERE status IN ('queued', 'reading')"
            )
        )

    async def requeue(self, workspace_id: str, event_id: str, *, count: bool = True) -> None:
        """An outage stopped the reading: try again later (attempts counts it, unless not
        `count`: the process was stopping)."""
        await self._pool.execute(
            """
            UPDATE documents SET status = 'queued', updated_at = now(),
                                 attempts = attempts - CASE WHEN $3 THEN 0 ELSE 1 END
            WHERE workspace_id = $1 AND event_id = $2 AND status = 'reading'
            """,
            workspace_id,
            event_id,
            count,
        )

    async def set_notice(self, workspace_id: str, event_id: str, notice: str) -> None:
        await self._pool.execute(
            "UPDATE documents SET notice_event_id = $3 WHERE workspace_id = $1 AND event_id = $2",
            workspace_id,
            event_id,
            notice,
        )

    async def skip(self, workspace_id: str, event_id: str, reason: str) -> bool:
        """Not read, for `reason` (as the room is told). False if the row is gone (redacted)."""
        status = await self._pool.execute(
            """
            UPDATE documents SET status = 'skipped', reason = $3, updated_at = now()
            WHERE workspace_id = $1 AND event_id = $2
            """,
            workspace_id,
            event_id,
            reason,
        )
        return str(status).endswith(" 1")

    async def finish(
        self,
        document: Document,
        memory: MemoryStore,
        items: Sequence[NewItem],
        vectors: Vectors | None,
        *,
        model: str,
        dims: int,
        pages: int | None,
        replaces: Sequence[str],
    ) -> tuple[bool, int]:
        """Store the pieces, delete the versions it `replaces` (their events), mark it done.
        (False, _) if the file was redacted or forgotten meanwhile: nothing is stored. The
        second value: pieces stored without a vector (to be embedded later)."""
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.fetchval(
                "SELECT status FROM documents WHERE workspace_id = $1 AND event_id = $2 "
                "FOR UPDATE",
                document.workspace_id,
                document.event_id,
            )
            if status != "reading":
                return False, 0
            replaced = []
            for old in replaces:
                gone = await conn.fetchval(
                    "DELETE FROM documents WHERE workspace_id = $1 AND event_id = $2 "
                    "AND status = 'done' RETURNING event_id",
                    document.workspace_id,
                    old,
                )
                if gone is not None:
                    await _delete_pieces(conn, document.workspace_id, old)
                    replaced.append(old)
            result = await memory.apply(
                [Insert(tuple(items), vectors)], model=model, dims=dims, conn=conn
            )
            await conn.execute(
                """
                UPDATE documents SET status = 'done', reason = NULL, pages = $3, pieces = $4,
                                     replaced = $5, updated_at = now()
                WHERE workspace_id = $1 AND event_id = $2
                """,
                document.workspace_id,
                document.event_id,
                pages,
                len(items),
                replaced[0] if replaced else None,
            )
        return True, result.unembedded

    async def forget(self, workspace_id: str, event_id: str) -> Document | None:
        """The document and its pieces deleted (a redaction, `!forget`); None if there was none.
        The file's message stays in the history (a redaction deals with that itself)."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"DELETE FROM documents WHERE workspace_id = $1 AND event_id = $2 "
                f"RETURNING {_COLUMNS}",
                workspace_id,
                event_id,
            )
            if row is None:
                return None
            await _delete_pieces(conn, workspace_id, event_id)
            return _document(row)

    async def by_id(self, workspace_id: str, document_id: int) -> Document | None:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM documents WHERE workspace_id = $1 AND id = $2",
            workspace_id,
            document_id,
        )
        return _document(row) if row is not None else None

    async def get(self, workspace_id: str, event_id: str) -> Document | None:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM documents WHERE workspace_id = $1 AND event_id = $2",
            workspace_id,
            event_id,
        )
        return _document(row) if row is not None else None

    async def of_workspace(self, workspace_id: str, *, limit: int = 50) -> list[Document]:
        """Newest first."""
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM documents WHERE workspace_id = $1 "
            "ORDER BY shared_at DESC, event_id LIMIT $2",
            workspace_id,
            limit,
        )
        return [_document(r) for r in rows]

    async def count(self, workspace_id: str) -> int:
        return int(
            await self._pool.fetchval(
                "SELECT count(*) FROM documents WHERE workspace_id = $1", workspace_id
            )
        )

    async def earlier_versions(self, document: Document) -> list[Document]:
        """Documents read before this one in its session under the same name."""
        rows = await self._pool.fetch(
            f"""
            SELECT {_COLUMNS} FROM documents
            WHERE workspace_id = $1 AND room_id = $2 AND name = $3 AND event_id <> $4
                  AND status = 'done' AND shared_at <= $5
            ORDER BY shared_at
            """,
            document.workspace_id,
            document.room_id,
            document.name,
            document.event_id,
            document.shared_at,
        )
        return [_document(r) for r in rows]


async def _delete_pieces(conn: asyncpg.Connection, workspace_id: str, event_id: str) -> None:
    await conn.execute(
        "DELETE FROM memory_items WHERE workspace_id = $1 AND event_id = $2 AND kind = 'document'",
        workspace_id,
        event_id,
    )
