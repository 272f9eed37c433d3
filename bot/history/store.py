"""Messages of sessions in PostgreSQL, each with a per-session seq: 1, 2, 3 … without gaps.

The seq comes from the session row (`last_seq`), incremented in the same transaction as the
insert: the row lock orders concurrent writers and a failed insert gives its number back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True, slots=True)
class StoredMessage:
    seq: int
    event_id: str
    sender: str
    kind: str
    body: str | None
    sent_at: datetime
    edited_at: datetime | None
    redacted: bool
    is_command: bool


class HistoryStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def add(
        self,
        room_id: str,
        event_id: str,
        sender: str,
        kind: str,
        body: str,
        sent_at: datetime,
        *,
        is_command: bool = False,
    ) -> int | None:
        """Store a message of a session. Returns its seq; None if it was stored already (or the
        room is not a session).

        One statement: one round trip, no transaction held open across awaits. A concurrent add
        of the same event fails on the unique event_id and its statement takes the seq back with
        it, so seqs stay gap-free.
        """
        try:
            seq = await self._pool.fetchval(
                """
                WITH fresh AS (
                    SELECT WHERE NOT EXISTS (SELECT FROM messages WHERE event_id = $2)
                ), next AS (
                    UPDATE sessions SET last_seq = last_seq + 1
                    WHERE room_id = $1 AND EXISTS (SELECT FROM fresh)
                    RETURNING last_seq
                )
                INSERT INTO messages
                    (room_id, seq, event_id, sender, kind, body, sent_at, is_command)
                SELECT $1, last_seq, $2, $3, $4, $5, $6, $7 FROM next
                RETURNING seq
                """,
                room_id,
                event_id,
                sender,
                kind,
                body,
                sent_at,
                is_command,
            )
        except asyncpg.UniqueViolationError:
            return None  # stored at the same moment by another worker
        return int(seq) if seq is not None else None

    async def sender_of(self, room_id: str, event_id: str) -> str | None:
        """Who sent the message, if it is one of this room's (an edit or a redaction may name
        any event ID, of any room)."""
        sender = await self._pool.fetchval(
            "SELECT sender FROM messages WHERE event_id = $1 AND room_id = $2", event_id, room_id
        )
        return str(sender) if sender is not None else None

    async def edit(self, event_id: str, body: str, edited_at: datetime) -> bool:
        result = await self._pool.execute(
            """
            UPDATE messages SET body = $2, edited_at = $3
            WHERE event_id = $1 AND redacted_at IS NULL
            """,
            event_id,
            body,
            edited_at,
        )
        return bool(result.endswith(" 1"))

    async def redact(self, event_id: str) -> bool:
        result = await self._pool.execute(
            "UPDATE messages SET body = NULL, redacted_at = now() WHERE event_id = $1", event_id
        )
        return bool(result.endswith(" 1"))

    async def page(
        self, room_id: str, *, after_seq: int = 0, limit: int = 100
    ) -> list[StoredMessage]:
        rows = await self._pool.fetch(
            """
            SELECT seq, event_id, sender, kind, body, sent_at, edited_at,
                   redacted_at IS NOT NULL AS redacted, is_command
            FROM messages WHERE room_id = $1 AND seq > $2 ORDER BY seq LIMIT $3
            """,
            room_id,
            after_seq,
            limit,
        )
        return [StoredMessage(**dict(row)) for row in rows]

    async def read_up_to(
        self, room_id: str, user_id: str, marker_event: str | None
    ) -> tuple[int, bool]:
        """The last seq this person has seen here — their read marker's message, or their own
        latest message (one who writes has read what came before; a command to the bot, like
        `!catchup` itself, says nothing of it), whichever is later — and whether the marker's
        event is a message of the history (a receipt may be on a reaction or a state event:
        then its time says more). A marker on the person's own message is the homeserver's
        implicit receipt for what they sent, not their reading: it counts as no marker."""
        row = await self._pool.fetchrow(
            """
            SELECT (SELECT seq FROM messages WHERE room_id = $1 AND event_id = $3
                    AND sender <> $2) AS marked,
                   (SELECT max(seq) FROM messages WHERE room_id = $1 AND sender = $2
                    AND NOT is_command) AS own,
                   EXISTS (SELECT FROM messages WHERE room_id = $1 AND event_id = $3
                           AND sender = $2) AS implicit
            """,
            room_id,
            user_id,
            marker_event,
        )
        assert row is not None
        return max(row["marked"] or 0, row["own"] or 0), row["marked"] is not None or row[
            "implicit"
        ]

    async def since(
        self,
        room_id: str,
        *,
        after_seq: int = 0,
        after: datetime | None = None,
        limit: int = 1000,
    ) -> list[StoredMessage]:
        """Messages after a seq and (if given) sent after a time, oldest first, at most
        `limit` (the latest ones)."""
        rows = await self._pool.fetch(
            """
            SELECT * FROM (
                SELECT seq, event_id, sender, kind, body, sent_at, edited_at,
                       redacted_at IS NOT NULL AS redacted, is_command
                FROM messages
                WHERE room_id = $1 AND seq > $2 AND ($3::timestamptz IS NULL OR sent_at > $3)
                ORDER BY seq DESC LIMIT $4
            ) last ORDER BY seq
            """,
            room_id,
            after_seq,
            after,
            limit,
        )
        return [StoredMessage(**dict(row)) for row in rows]

    async def recent(self, room_id: str, limit: int) -> list[StoredMessage]:
        """The last `limit` messages, oldest first."""
        rows = await self._pool.fetch(
            """
            SELECT * FROM (
                SELECT seq, event_id, sender, kind, body, sent_at, edited_at,
                       redacted_at IS NOT NULL AS redacted, is_command
                FROM messages WHERE room_id = $1 ORDER BY seq DESC LIMIT $2
            ) last ORDER BY seq
            """,
            room_id,
            limit,
        )
        return [StoredMessage(**dict(row)) for row in rows]

    async def around(
        self, workspace_id: str, event_ids: Sequence[str], *, each_side: int
    ) -> dict[str, tuple[list[StoredMessage], list[StoredMessage]]]:
        """For each of these messages (of the workspace's sessions), the people's messages just
        before it and just after it in its session (`each_side` of each, oldest first; neither
        commands, the bot's, nor redacted ones)."""
        if not event_ids or each_side <= 0:
            return {}
        rows = await self._pool.fetch(
            """
            SELECT m.event_id AS hit, n.seq < m.seq AS before, n.seq, n.event_id, n.sender,
                   n.kind, n.body, n.sent_at, n.edited_at, n.redacted_at IS NOT NULL AS redacted,
                   n.is_command
            FROM messages m
            JOIN sessions s ON s.room_id = m.room_id AND s.workspace_id = $1
            CROSS JOIN LATERAL (
                (SELECT * FROM messages b
                 WHERE b.room_id = m.room_id AND b.seq < m.seq AND b.kind = 'user'
                   AND NOT b.is_command AND b.body IS NOT NULL
                 ORDER BY b.seq DESC LIMIT $3)
                UNION ALL
                (SELECT * FROM messages a
                 WHERE a.room_id = m.room_id AND a.seq > m.seq AND a.kind = 'user'
                   AND NOT a.is_command AND a.body IS NOT NULL
                 ORDER BY a.seq LIMIT $3)
            ) n
            WHERE m.event_id = ANY($2::text[])
            ORDER BY m.event_id, n.seq
            """,
            workspace_id,
            list(event_ids),
            each_side,
        )
        found: dict[str, tuple[list[StoredMessage], list[StoredMessage]]] = {}
        for row in rows:
            fields = dict(row)
            hit, before = fields.pop("hit"), fields.pop("before")
            sides = found.setdefault(hit, ([], []))
            sides[0 if before else 1].append(StoredMessage(**fields))
        return found

    async def stats(self, room_id: str) -> tuple[int, list[str], datetime | None, datetime | None]:
        """(messages, people who wrote, first, last) of a session's conversation: people's
        messages, neither commands nor redacted ones."""
        row = await self._pool.fetchrow(
            """
            SELECT count(*) AS n, array_agg(DISTINCT sender) AS people,
                   min(sent_at) AS first, max(sent_at) AS last
            FROM messages
            WHERE room_id = $1 AND redacted_at IS NULL AND kind = 'user' AND NOT is_command
            """,
            room_id,
        )
        assert row is not None
        return int(row["n"]), sorted(row["people"] or []), row["first"], row["last"]
