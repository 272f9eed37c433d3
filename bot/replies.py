"""Answers to one received event, sent so that handling the event twice sends them once.

Each message gets a transaction ID derived from the event being answered and its position among
the answers (1st, 2nd, …), recorded in `sent_events` once the homeserver accepted it. Handling
the event again (after a crash, or after the homeserver went away mid-send) finds the record and
does not send again. One gap is left by any homeserver: a send it accepted but whose answer never
arrived. For that, a retry first looks for the transaction ID, which every message carries in its
content, among the bot's latest messages in the room.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta
from typing import Any

import asyncpg

from appservice.matrix import JSON, MatrixAPI, markdown_content

log = logging.getLogger(__name__)

TXN_KEY = "org.doryo.txn_id"
_LOOKBACK = 100


class SentEventStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, txn_id: str) -> str | None:
        event_id = await self._pool.fetchval(
            "SELECT event_id FROM sent_events WHERE txn_id = $1", txn_id
        )
        return str(event_id) if event_id is not None else None

    async def record(self, txn_id: str, room_id: str, event_id: str) -> None:
        await self._pool.execute(
            """
            INSERT INTO sent_events (txn_id, room_id, event_id) VALUES ($1, $2, $3)
            ON CONFLICT (txn_id) DO NOTHING
            """,
            txn_id,
            room_id,
            event_id,
        )

    async def prune(self, older_than: timedelta) -> None:
        await self._pool.execute(
            "DELETE FROM sent_events WHERE sent_at < now() - $1::interval", older_than
        )


class Replier:
    def __init__(
        self,
        matrix: MatrixAPI,
        sent: SentEventStore,
        room_id: str,
        event_id: str,
        *,
        retried: bool = False,
    ) -> None:
        self.matrix = matrix
        self.room_id = room_id
        self.event_id = event_id
        self._sent = sent
        self._retried = retried
        self._digest = hashlib.sha256(event_id.encode()).hexdigest()[:24]
        self._count = 0

    def next_txn_id(self) -> str:
        self._count += 1
        return f"doryo.r.{self._digest}.{self._count}"

    async def send(
        self, content: JSON, event_type: str = "m.room.message", *, room_id: str | None = None
    ) -> str:
        """Send once; `room_id` sends to another room than the one being answered."""
        room_id = room_id or self.room_id
        txn_id = self.next_txn_id()
        if (known := await self._sent.get(txn_id)) is not None:
            return known
        content = {**content, TXN_KEY: txn_id}
        event_id = await self._find_sent(room_id, txn_id) if self._retried else None
        if event_id is None:
            event_id = await self.matrix.send_event(room_id, event_type, content, txn_id)
        await self._sent.record(txn_id, room_id, event_id)
        return event_id

    async def _find_sent(self, room_id: str, txn_id: str) -> str | None:
        """The event the homeserver made of this transaction before its answer was lost."""
        page = await self.matrix.messages(
            room_id, limit=_LOOKBACK, event_filter={"senders": [self.matrix.user_id]}
        )
        for event in page.get("chunk", []):
            if event.get("content", {}).get(TXN_KEY) == txn_id:
                log.info("%s was sent before its answer was lost; not sending it again", txn_id)
                return str(event["event_id"])
        return None

    async def send_notice(
        self,
        markdown: str,
        *,
        reply_to: str | None = "",
        room_id: str | None = None,
        **kwargs: Any,
    ) -> str:
        """An m.notice, by default as a reply to the event being answered ("" = that event)."""
        target = self.event_id if reply_to == "" else reply_to
        content = markdown_content(markdown, notice=True, reply_to=target, **kwargs)
        return await self.send(content, room_id=room_id)

    async def send_text(self, markdown: str, *, reply_to: str | None = "", **kwargs: Any) -> str:
        target = self.event_id if reply_to == "" else reply_to
        return await self.send(markdown_content(markdown, reply_to=target, **kwargs))
