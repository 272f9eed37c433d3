"""Sessions in PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg


@dataclass(frozen=True, slots=True)
class Session:
    room_id: str
    workspace_id: str
    topic: str
    status: str
    adopted: bool
    started_by: str | None
    started_at: datetime
    ended_at: datetime | None
    summary: str | None
    agent: str | None
    """The blueprint answering here if not the workspace's: "code" or "code@version"."""
    history_read_by: str | None
    """Who let the bot read an adopted room's earlier messages (None: nobody yet)."""

    @property
    def active(self) -> bool:
        return self.status == "active"


_COLUMNS = (
    "room_id, workspace_id, topic, status, adopted, started_by, started_at, ended_at, summary, "
    "agent, history_read_by"
)


def _session(row: Any) -> Session:
    return Session(**dict(row))


class SessionStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def add(
        self,
        room_id: str,
        workspace_id: str,
        topic: str,
        started_by: str | None,
        *,
        adopted: bool,
        origin_event: str | None = None,
    ) -> Session:
        row = await self._pool.fetchrow(
            f"""
            INSERT INTO sessions (room_id, workspace_id, topic, started_by, adopted, origin_event)
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (room_id) DO UPDATE SET room_id = excluded.room_id
            RETURNING {_COLUMNS}
            """,
            room_id,
            workspace_id,
            topic,
            started_by,
            adopted,
            origin_event,
        )
        return _session(row)

    async def by_origin(self, event_id: str) -> Session | None:
        """The session a `!session start` event made, if it was handled before."""
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM sessions WHERE origin_event = $1", event_id
        )
        return _session(row) if row else None

    async def get(self, room_id: str) -> Session | None:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM sessions WHERE room_id = $1", room_id
        )
        return _session(row) if row else None

    async def of_workspace(self, workspace_id: str, *, active_only: bool = False) -> list[Session]:
        rows = await self._pool.fetch(
            f"""
            SELECT {_COLUMNS} FROM sessions
            WHERE workspace_id = $1 AND ($2 = false OR status = 'active')
            ORDER BY status, started_at
            """,
            workspace_id,
            active_only,
        )
        return [_session(row) for row in rows]

    async def set_agent(self, room_id: str, agent: str | None) -> None:
        await self._pool.execute(
            "UPDATE sessions SET agent = $2 WHERE room_id = $1", room_id, agent
        )

    async def end(self, room_id: str, ended_by: str, summary: str) -> bool:
        """Mark an active session ended. False if it was not active (ended once only)."""
        result = await self._pool.execute(
            """
            UPDATE sessions SET status = 'ended', ended_by = $2, ended_at = now(), summary = $3
            WHERE room_id = $1 AND status = 'active'
            """,
            room_id,
            ended_by,
            summary,
        )
        return bool(result.endswith(" 1"))

    async def set_history_read(self, room_id: str, by: str) -> None:
        await self._pool.execute(
            "UPDATE sessions SET history_read_by = $2 WHERE room_id = $1", room_id, by
        )

    # Rooms a space listed that the bot could not join yet (bot.sessions.adoption) --------------

    async def add_pending(self, room_id: str, workspace_id: str, added_by: str) -> None:
        await self._pool.execute(
            """
            INSERT INTO pending_adoptions (room_id, workspace_id, added_by) VALUES ($1, $2, $3)
            ON CONFLICT (room_id, workspace_id) DO UPDATE SET added_by = excluded.added_by
            """,
            room_id,
            workspace_id,
            added_by,
        )

    async def pending(self, room_id: str) -> list[tuple[str, str]]:
        """(workspace ID, who listed it) for each workspace waiting to adopt this room."""
        rows = await self._pool.fetch(
            """
            SELECT workspace_id, added_by FROM pending_adoptions WHERE room_id = $1
            ORDER BY created_at
            """,
            room_id,
        )
        return [(row["workspace_id"], row["added_by"]) for row in rows]

    async def drop_pending(self, room_id: str, workspace_id: str | None = None) -> None:
        await self._pool.execute(
            """
            DELETE FROM pending_adoptions
            WHERE room_id = $1 AND ($2::text IS NULL OR workspace_id = $2)
            """,
            room_id,
            workspace_id,
        )
