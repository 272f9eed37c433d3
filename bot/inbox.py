"""The inbox: every room event the homeserver pushed, persisted before it gets its 200.

`Inbox` is the appservice's TransactionSink. Storing a transaction is one SQL statement (one
round trip, its own transaction): record the transaction's (ID, fingerprint), and only if that is
new insert its events, skipping event IDs already stored.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from appservice.transactions import JSON, Transaction

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InboxEvent:
    id: int
    event_id: str
    room_id: str
    event: JSON
    received_at: datetime
    attempts: int


_STORE_TRANSACTION = """
WITH txn AS (
    INSERT INTO appservice_transactions (txn_id, fingerprint, event_count)
    VALUES ($1, $2, cardinality($3::text[]))
    ON CONFLICT DO NOTHING
    RETURNING 1
), stored AS (
    INSERT INTO inbox_events (event_id, room_id, event)
    SELECT e.event_id, e.room_id, e.event::jsonb
    FROM unnest($3::text[], $4::text[], $5::text[])
         WITH ORDINALITY AS e(event_id, room_id, event, n)
    WHERE EXISTS (SELECT 1 FROM txn)
    ORDER BY e.n
    ON CONFLICT (event_id) DO NOTHING
    RETURNING room_id
)
SELECT EXISTS (SELECT 1 FROM txn) AS is_new, array(SELECT DISTINCT room_id FROM stored) AS rooms
"""


class InboxStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def store_transaction(self, txn: Transaction) -> tuple[bool, list[str]]:
        """Persist a transaction. Returns (is it new, rooms that got new events)."""
        row = await self._pool.fetchrow(
            _STORE_TRANSACTION,
            txn.txn_id,
            txn.fingerprint,
            [e["event_id"] for e in txn.events],
            [e["room_id"] for e in txn.events],
            [json.dumps(e, ensure_ascii=False) for e in txn.events],
        )
        assert row is not None
        return bool(row["is_new"]), list(row["rooms"])

    async def known(self, event_ids: Sequence[str]) -> set[str]:
        """Which of these events the inbox holds (or held: pruned ones are long handled)."""
        rows = await self._pool.fetch(
            "SELECT event_id FROM inbox_events WHERE event_id = any($1::text[])", list(event_ids)
        )
        return {row["event_id"] for row in rows}

    async def first_received(self, room_id: str) -> datetime | None:
        """When the oldest event the inbox holds of this room arrived."""
        value = await self._pool.fetchval(
            "SELECT min(received_at) FROM inbox_events WHERE room_id = $1", room_id
        )
        return value if isinstance(value, datetime) else None

    async def add_missed(self, events: Sequence[JSON]) -> list[str]:
        """Store events the homeserver never pushed (found by bot.catchup), skipping any that
        arrived meanwhile. Returns the rooms that got new events."""
        rows = await self._pool.fetch(
            """
            INSERT INTO inbox_events (event_id, room_id, event)
            SELECT e.event_id, e.room_id, e.event::jsonb
            FROM unnest($1::text[], $2::text[], $3::text[])
                 WITH ORDINALITY AS e(event_id, room_id, event, n)
            ORDER BY e.n
            ON CONFLICT (event_id) DO NOTHING
            RETURNING room_id
            """,
            [e["event_id"] for e in events],
            [e["room_id"] for e in events],
            [json.dumps(e, ensure_ascii=False) for e in events],
        )
        return sorted({row["room_id"] for row in rows})

    async def rooms_active_since(self, since: timedelta) -> list[str]:
        """Rooms with an event handled in the last `since`."""
        rows = await self._pool.fetch(
            """
            SELECT DISTINCT room_id FROM inbox_events
            WHERE state <> 'pending' AND handled_at > now() - $1::interval
            """,
            since,
        )
        return [row["room_id"] for row in rows]

    async def pending(self, room_id: str, limit: int = 100) -> list[InboxEvent]:
        rows = await self._pool.fetch(
            """
            SELECT id, event_id, room_id, event, received_at, attempts FROM inbox_events
            WHERE room_id = $1 AND state = 'pending' ORDER BY id LIMIT $2
            """,
            room_id,
            limit,
        )
        return [InboxEvent(**dict(row)) for row in rows]

    async def rooms_with_pending(self) -> list[str]:
        rows = await self._pool.fetch(
            """
            SELECT room_id FROM inbox_events WHERE state = 'pending'
            GROUP BY room_id ORDER BY min(id)
            """
        )
        return [row["room_id"] for row in rows]

    async def start_attempt(self, event_id: int) -> None:
        """Count that the bot picked the event up. Not worth an fsync: if the count is lost in a
        database crash, the guard against an event that crashes the bot is only later."""
        await self._pool.execute(
            "BEGIN; SET LOCAL synchronous_commit TO off; "
            f"UPDATE inbox_events SET attempts = attempts + 1 WHERE id = {int(event_id)}; COMMIT"
        )

    async def mark_done(self, event_id: int) -> None:
        """Not worth an fsync either: an event whose mark is lost in a database crash is handled
        again, which the handlers make harmless (what they sent is recorded durably, by
        transaction ID). Sparing the fsync keeps the disk for the transactions being acked."""
        await self._pool.execute(
            "BEGIN; SET LOCAL synchronous_commit TO off; UPDATE inbox_events"
            f" SET state = 'done', handled_at = now() WHERE id = {int(event_id)}; COMMIT"
        )

    async def mark_failed(self, event_id: int, error: str) -> None:
        await self._pool.execute(
            """
            UPDATE inbox_events SET state = 'failed', handled_at = now(), error = $2
            WHERE id = $1
            """,
            event_id,
            error[:2000],
        )

    async def redaction_pending(self, room_id: str, event_id: str) -> bool:
        """A redaction of `event_id` has arrived and waits its turn (the event is taken back)."""
        return bool(
            await self._pool.fetchval(
                """
                SELECT EXISTS (
                    SELECT 1 FROM inbox_events
                    WHERE room_id = $1 AND state = 'pending'
                      AND event->>'type' = 'm.room.redaction'
                      AND coalesce(event->>'redacts', event->'content'->>'redacts') = $2
                )
                """,
                room_id,
                event_id,
            )
        )

    async def counts(self) -> dict[str, int]:
        rows = await self._pool.fetch(
            "SELECT state, count(*) AS n FROM inbox_events GROUP BY state"
        )
        return {row["state"]: int(row["n"]) for row in rows}

    async def prune(self, older_than: timedelta) -> int:
        """Forget handled events and transaction records older than `older_than`.

        Homeservers do not redeliver anything that old, so deduplication does not need them.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            events = await conn.execute(
                """
                DELETE FROM inbox_events
                WHERE state <> 'pending' AND handled_at < now() - $1::interval
                """,
                older_than,
            )
            await conn.execute(
                "DELETE FROM appservice_transactions WHERE received_at < now() - $1::interval",
                older_than,
            )
        return int(events.split()[-1])


class Inbox:
    """The appservice's TransactionSink: persists, then wakes the rooms that got events."""

    def __init__(
        self,
        store: InboxStore,
        wake: Callable[[Sequence[str]], None],
        on_ephemeral: Callable[[Sequence[JSON]], Awaitable[Any]],
    ) -> None:
        self._store = store
        self._wake = wake
        self._on_ephemeral = on_ephemeral

    async def store_transaction(self, txn: Transaction) -> bool:
        is_new, rooms = await self._store.store_transaction(txn)
        if not is_new:
            log.info("transaction %s was already stored; answering 200 again", txn.txn_id)
        if rooms:
            self._wake(rooms)
        return is_new

    async def handle_ephemeral(self, events: Sequence[JSON]) -> None:
        await self._on_ephemeral(events)
