"""Tasks in PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import asyncpg


@dataclass(frozen=True, slots=True)
class Task:
    id: int
    workspace_id: str
    room_id: str
    title: str
    notes: str
    assignee: str | None
    due: date | None
    status: str
    created_by: str
    created_at: datetime
    done_by: str | None


_COLUMNS = (
    "id, workspace_id, room_id, title, notes, assignee, due, status, created_by, created_at, "
    "done_by"
)


class TaskStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def add(
        self,
        workspace_id: str,
        room_id: str,
        title: str,
        created_by: str,
        *,
        notes: str = "",
        assignee: str | None = None,
        due: date | None = None,
        idempotency_key: str | None = None,
    ) -> Task:
        """Add a task; with an idempotency key seen before, the task made then."""
        row = await self._pool.fetchrow(
            f"""
            INSERT INTO tasks
                (workspace_id, room_id, title, notes, assignee, due, created_by, idempotency_key)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
            ON CONFLICT (idempotency_key) DO UPDATE SET idempotency_key = excluded.idempotency_key
            RETURNING {_COLUMNS}
            """,
            workspace_id,
            room_id,
            title,
            notes,
            assignee,
            due,
            created_by,
            idempotency_key,
        )
        return Task(**dict(row))

    async def of_workspace(self, workspace_id: str, *, include_done: bool = False) -> list[Task]:
        rows = await self._pool.fetch(
            f"""
            SELECT {_COLUMNS} FROM tasks
            WHERE workspace_id = $1 AND ($2 OR status = 'open')
            ORDER BY status DESC, due NULLS LAST, id
            """,
            workspace_id,
            include_done,
        )
        return [Task(**dict(row)) for row in rows]

    async def get(self, workspace_id: str, task_id: int) -> Task | None:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM tasks WHERE workspace_id = $1 AND id = $2",
            workspace_id,
            task_id,
        )
        return Task(**dict(row)) if row else None

    async def mark_done(self, workspace_id: str, task_id: int, by: str) -> bool:
        """Close an open task. False if there is no such open task in this workspace."""
        result = await self._pool.execute(
            """
            UPDATE tasks SET status = 'done', done_by = $3, done_at = now()
            WHERE workspace_id = $1 AND id = $2 AND status = 'open'
            """,
            workspace_id,
            task_id,
            by,
        )
        return bool(result.endswith(" 1"))
