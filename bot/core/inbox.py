"""The inbox: every room event the homeserver pushed, persisted before it gets its 200.

`Inbox` is the appservice's TransactionSink. Storing a transaction is one INSERT of one row, the
journal: the transaction's (ID, fingerprint) and its events as one JSON text. Right after the
200, the events are unpacked into `inbox_events` (one row each, event IDs already stored
skipped), where the dispatcher finds them. A crash between the two loses nothing: unpacking
runs again at start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

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


_JOURNAL_TRANSACTION = """
INSERT INTO appservice_transactions (txn_id, fingerprint, event_count, events, crypto)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT DO NOTHING
RETURNING seq
"""

# Transactions in arrival order, their events in the order the homeserver sent them: the
# identity of inbox_events follows the ORDER BY, and each room's events are handled in it.
_UNPACK = """
WITH taken AS (
    -- RETURNING gives the updated row: the events are read from the row as it was.
    UPDATE appservice_transactions AS t SET events = NULL
    FROM (
        SELECT seq, events, received_at FROM appservice_transactions
        WHERE events IS NOT NULL AND unpack_error IS NULL AND ($1::bigint IS NULL OR seq = $1)
        ORDER BY seq LIMIT $2
        FOR UPDATE
    ) AS journaled
    WHERE t.seq = journaled.seq
    RETURNING journaled.seq, journaled.events, journaled.received_at
), stored AS (
    INSERT INTO inbox_events (event_id, room_id, event, received_at)
    SELECT e.event->>'event_id', e.event->>'room_id', e.event, taken.received_at
    FROM taken, jsonb_array_elements(taken.events::jsonb) WITH ORDINALITY AS e(event, n)
    ORDER BY taken.seq, e.n
    ON CONFLICT (event_id) DO NOTHING
    RETURNING room_id
)
SELECT (SELECT count(*) FROM taken) AS transactions, array(SELECT DISTINCT room_id FROM stored)
       AS rooms
"""

# What in a transaction's own content can make unpacking it fail, as opposed to the database
# being away. Such a transaction is set aside so that the ones after it are not held up.
_BAD_CONTENT = (
    asyncpg.DataError,
    asyncpg.ProgramLimitExceededError,
    asyncpg.IntegrityConstraintViolationError,
)
UNPACK_BATCH = 100


def events_json(events: Sequence[JSON] | JSON) -> str:
    """The events as one JSON text PostgreSQL can turn into jsonb.

    jsonb has no NUL character (`\\u0000` is refused), and the homeserver's canonical JSON
    allows it in a string: such a NUL becomes U+FFFD rather than holding up its transaction.
    """
    text = json.dumps(events, ensure_ascii=False)
    if "\\u0000" in text:
        text = json.dumps(_without_nul(events), ensure_ascii=False)
    return text


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    return value


class InboxStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def store_transaction(self, txn: Transaction) -> bool:
        """Journal a transaction, durably. False if it was stored before."""
        seq = await self._pool.fetchval(
            _JOURNAL_TRANSACTION,
            txn.txn_id,
            txn.fingerprint,
            len(txn.events),
            events_json(txn.events) if txn.events else None,
            events_json(txn.crypto) if txn.crypto else None,
        )
        return seq is not None

    async def crypto_parts(self, limit: int = 100) -> list[tuple[int, JSON]]:
        """Journaled encryption parts the bot's device has not taken in yet, oldest first."""
        rows = await self._pool.fetch(
            """
            SELECT seq, crypto FROM appservice_transactions
            WHERE crypto IS NOT NULL ORDER BY seq LIMIT $1
            """,
            limit,
        )
        return [(int(row["seq"]), json.loads(row["crypto"])) for row in rows]

    async def crypto_taken(self, seq: int) -> None:
        await self._pool.execute(
            "UPDATE appservice_transactions SET crypto = NULL WHERE seq = $1", seq
        )

    async def unpack(self) -> list[str]:
        """Move journaled events into the inbox, oldest transaction first, skipping event IDs
        already there. Returns the rooms that got new events.

        Callers run one unpack at a time (`Inbox.unpack`): two at once could interleave
        transactions and so reorder a room's events.
        """
        rooms: set[str] = set()
        while True:
            try:
                taken, new_rooms = await self._unpack(None, UNPACK_BATCH)
            except _BAD_CONTENT:
                taken, new_rooms = await self._unpack_one_by_one()
            rooms.update(new_rooms)
            if taken < UNPACK_BATCH:
                return sorted(rooms)

    async def _unpack(self, seq: int | None, limit: int) -> tuple[int, list[str]]:
        row = await self._pool.fetchrow(_UNPACK, seq, limit)
        assert row is not None
        return int(row["transactions"]), list(row["rooms"])

    async def _unpack_one_by_one(self) -> tuple[int, list[str]]:
        """A batch failed on its content: unpack it a transaction at a time, setting aside any
        that fails alone."""
        seqs = await self._pool.fetch(
            """
            SELECT seq FROM appservice_transactions
            WHERE events IS NOT NULL AND unpack_error IS NULL ORDER BY seq LIMIT $1
            """,
            UNPACK_BATCH,
        )
        rooms: list[str] = []
        for row in seqs:
            try:
                rooms += (await self._unpack(row["seq"], 1))[1]
            except _BAD_CONTENT as e:
                log.error(
                    "could not unpack the events of journaled transaction %d, set aside: %s",
                    row["seq"],
                    e,
                )
                await self._pool.execute(
                    "UPDATE appservice_transactions SET unpack_error = $2 WHERE seq = $1",
                    row["seq"],
                    str(e)[:2000],
                )
        return len(seqs), rooms

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
        """Store events the homeserver never pushed (found by bot.missed_events), skipping any that
        arrived meanwhile. Returns the rooms that got new events."""
        rows = await self._pool.fetch(
            """
            INSERT INTO inbox_events (event_id, room_id, event)
            SELECT e.event->>'event_id', e.event->>'room_id', e.event
            FROM jsonb_array_elements($1::text::jsonb) WITH ORDINALITY AS e(event, n)
            ORDER BY e.n
            ON CONFLICT (event_id) DO NOTHING
            RETURNING room_id
            """,
            events_json(events),
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

    async def pending_count(self) -> int:
        """Events waiting in the whole inbox (through the index of pending events only)."""
        return int(
            await self._pool.fetchval("SELECT count(*) FROM inbox_events WHERE state = 'pending'")
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
                """
                DELETE FROM appservice_transactions
                WHERE events IS NULL AND crypto IS NULL AND received_at < now() - $1::interval
                """,
                older_than,
            )
        return int(events.split()[-1])


class _Rerun:
    """`work` run in the background, and once more if asked for while it runs (it may have read
    the journal already). What it does not get to stays in the journal: a failure is logged and
    left to the next transaction or the bot's maintenance."""

    def __init__(self, work: Callable[[], Awaitable[None]], what: str) -> None:
        self._work = work
        self._what = what
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def soon(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"inbox: {self._what}")
        else:
            self._again = True

    async def _run(self) -> None:
        self._again = True
        while self._again:
            self._again = False
            try:
                await self._work()
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as e:
                log.warning("could not %s yet: %s", self._what, e)
                return
            except Exception:
                log.exception("could not %s", self._what)
                return

    async def settled(self) -> None:
        while self._task is not None and not self._task.done():
            # wait(), not gather(): a caller that gives up (a timeout) must not cancel the work.
            await asyncio.wait({self._task})


class CryptoSink(Protocol):
    """The bot's device (bot/encryption/machine.py), as the inbox feeds it."""

    ready: asyncio.Event

    def saw(self, crypto: JSON) -> None:
        """A new transaction's encryption part, journaled (must not block)."""

    def saw_room_event(self, event: JSON) -> None:
        """A new transaction's room event, journaled (must not block)."""

    async def take_in(self, crypto: JSON) -> None:
        """A journaled encryption part, in order; raising leaves it in the journal."""


class Inbox:
    """The appservice's TransactionSink: journals, answers, then unpacks and wakes the rooms
    that got events; feeds the bot's device what transactions carry for encryption."""

    def __init__(
        self,
        store: InboxStore,
        wake: Callable[[Sequence[str]], None],
        on_ephemeral: Callable[[Sequence[JSON]], Awaitable[Any]],
        on_journaled: Callable[[Sequence[JSON]], None] | None = None,
        crypto: CryptoSink | None = None,
    ) -> None:
        """`on_journaled`: shown a new transaction's events once they are safe, as the
        homeserver gets its answer and before they are unpacked. It must not block."""
        self._store = store
        self._wake = wake
        self._on_ephemeral = on_ephemeral
        self._on_journaled = on_journaled
        self._crypto = crypto
        self._unpacking = asyncio.Lock()
        self._taking_in = asyncio.Lock()
        # Not awaited by the transaction's handler: the homeserver has its 200 meanwhile.
        self._unpacker = _Rerun(self.unpack, "unpack the transaction journal")
        self._taker = _Rerun(self.take_in_crypto, "take in the journaled encryption parts")

    async def store_transaction(self, txn: Transaction) -> bool:
        if self._crypto is None and txn.crypto is not None:
            # Encryption off: nothing would ever take this part in (device-list changes come
            # whenever the registration asks for them).
            txn = dataclasses.replace(txn, crypto=None)
        is_new = await self._store.store_transaction(txn)
        if is_new and self._crypto is not None:
            # Before the 200: a room turned encrypted is encrypted for every reply from now on.
            for event in txn.events:
                self._crypto.saw_room_event(event)
            if txn.crypto:
                self._crypto.saw(txn.crypto)
                self.take_in_crypto_soon()
        if not is_new:
            log.info("transaction %s was already stored; answering 200 again", txn.txn_id)
        elif txn.events:
            self._unpacker.soon()
            if self._on_journaled is not None:
                # Next round of the loop: the homeserver's 200 goes out first.
                asyncio.get_running_loop().call_soon(self._show_journaled, txn)
        return is_new

    def _show_journaled(self, txn: Transaction) -> None:
        assert self._on_journaled is not None
        try:
            self._on_journaled(txn.events)
        except Exception:
            log.exception("looking early at the events of transaction %s failed", txn.txn_id)

    async def handle_ephemeral(self, events: Sequence[JSON]) -> None:
        await self._on_ephemeral(events)

    async def take_in_crypto(self) -> None:
        """Hand the journaled encryption parts to the bot's device, oldest first, each removed
        from the journal once taken in. Nothing while the device is not ready: they wait."""
        if self._crypto is None:
            return
        async with self._taking_in:
            while self._crypto.ready.is_set():
                parts = await self._store.crypto_parts()
                for seq, part in parts:
                    await self._crypto.take_in(part)
                    await self._store.crypto_taken(seq)
                if len(parts) < 100:
                    return

    def take_in_crypto_soon(self) -> None:
        self._taker.soon()

    async def unpack(self) -> None:
        """Unpack whatever the journal holds and wake the rooms that got events."""
        async with self._unpacking:
            rooms = await self._store.unpack()
        if rooms:
            self._wake(rooms)

    async def settled(self) -> None:
        """Wait until the background unpack is done: at stop (what it would not get to is
        done at the next start), and for tests and benchmarks."""
        await self._unpacker.settled()
        await self._taker.settled()
