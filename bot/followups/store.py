"""Follow-ups in PostgreSQL. A due reminder is claimed by one UPDATE … RETURNING, so that two
bot processes (or a restart mid-send) post it once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True, slots=True)
class Followup:
    id: int
    workspace_id: str
    room_id: str
    recipient: str | None
    text: str
    due_at: datetime
    status: str
    created_by: str
    attempts: int = 0
    """Failed tries to post it so far."""


_COLUMNS = "id, workspace_id, room_id, recipient, text, due_at, status, created_by, attempts"


class FollowupStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def add(
        self,
        workspace_id: str,
        room_id: str,
        text: str,
        due_at: datetime,
        created_by: str,
        *,
        recipient: str | None = None,
        idempotency_key: str | None = None,
    ) -> Followup:
        row = await self._pool.fetchrow(
            f"""
            INSERT INTO followups
                (workspace_id, room_id, recipient, text, due_at, created_by, idempotency_key)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (idempotency_key) DO UPDATE SET idempotency_key = excluded.idempotency_key
            RETURNING {_COLUMNS}
            """,
            workspace_id,
            room_id,
            recipient,
            text,
            due_at,
            created_by,
            idempotency_key,
        )
        return Followup(**dict(row))

    async def claim_due(self, limit: int = 50) -> list[Followup]:
        """Due reminders, marked as being sent. One left `sending` by a process that died more
        than `stale` ago is taken again (its send is idempotent: see bot.followups.scheduler)."""
        rows = await self._pool.fetch(
            f"""
            UPDATE followups SET status = 'sending', claimed_at = now()
            WHERE id IN (
                SELECT id FROM followups
                WHERE due_at <= now()
                  AND (status = 'pending'
                       OR (status = 'sending' AND claimed_at < now() - interval '2 minutes'))
                ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED
            )
            RETURNING {_COLUMNS}
            """,
            limit,
        )
        return [Followup(**dict(row)) for row in rows]

    async def mark_sent(self, followup_id: int, event_id: str) -> None:
        await self._pool.execute(
            "UPDATE followups SET status = 'sent', sent_event_id = $2 WHERE id = $1",
            followup_id,
            event_id,
        )

    async def try_again(self, followup_id: int, after: float) -> None:
        """Posting failed: counted, and due again `after` seconds from now."""
        await self._pool.execute(
            """
            UPDATE followups SET status = 'pending', attempts = attempts + 1,
                                 due_at = now() + make_interval(secs => $2)
            WHERE id = $1
            """,
            followup_id,
            after,
        )

    async def mark_failed(self, followup_id: int) -> None:
        await self._pool.execute(
            "UPDATE followups SET status = 'failed', attempts = attempts + 1 WHERE id = $1",
            followup_id,
        )

    async def next_due(self) -> datetime | None:
        """When the loop should look again: the next due reminder, or when one being sent
        would count as abandoned."""
        value = await self._pool.fetchval(
            """
            SELECT min(CASE WHEN status = 'pending' THEN due_at
                            ELSE claimed_at + interval '2 minutes' END)
            FROM followups WHERE status IN ('pending', 'sending')
            """
        )
        return value if isinstance(value, datetime) else None
