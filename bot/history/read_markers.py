"""Where each person last read each room: their public read receipts (m.receipt ephemeral
events), the latest kept. Receipts are untrusted JSON; only the homeserver's shape is taken."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg


@dataclass(frozen=True, slots=True)
class ReadMarker:
    room_id: str
    user_id: str
    event_id: str
    read_at: datetime


def receipts_in(event: Mapping[str, Any]) -> Iterator[ReadMarker]:
    """The main-timeline read receipts an m.receipt event carries (threaded ones describe a
    thread, not the room; private ones never reach the appservice)."""
    room_id, content = event.get("room_id"), event.get("content")
    if event.get("type") != "m.receipt" or not isinstance(room_id, str):
        return
    if not isinstance(content, Mapping):
        return
    for event_id, kinds in content.items():
        reads = kinds.get("m.read") if isinstance(kinds, Mapping) else None
        if not isinstance(event_id, str) or not isinstance(reads, Mapping):
            continue
        for user_id, receipt in reads.items():
            if not isinstance(user_id, str) or not isinstance(receipt, Mapping):
                continue
            if receipt.get("thread_id") not in (None, "main"):
                continue
            ts = receipt.get("ts")
            read_at = (
                datetime.fromtimestamp(ts / 1000, UTC)
                if isinstance(ts, int) and 0 < ts < 32_503_680_000_000
                else datetime.now(UTC)
            )
            yield ReadMarker(room_id, user_id, event_id, read_at)


class ReadMarkerStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def record(self, markers: list[ReadMarker]) -> None:
        """Keep each person's latest marker per room (an older receipt arriving late changes
        nothing). A receipt on the person's own event is the homeserver's implicit one for what
        they sent — not a sign of reading — and does not replace the marker they set."""
        if not markers:
            return
        await self._pool.executemany(
            """
            INSERT INTO read_markers (room_id, user_id, event_id, read_at)
            SELECT $1, $2, $3, $4
            WHERE NOT EXISTS (
                SELECT FROM inbox_events WHERE event_id = $3 AND event->>'sender' = $2
            ) AND NOT EXISTS (SELECT FROM messages WHERE event_id = $3 AND sender = $2)
            ON CONFLICT (room_id, user_id) DO UPDATE
            SET event_id = excluded.event_id, read_at = excluded.read_at
            WHERE read_markers.read_at <= excluded.read_at
            """,
            [(m.room_id, m.user_id, m.event_id, m.read_at) for m in markers],
        )

    async def get(self, room_id: str, user_id: str) -> ReadMarker | None:
        row = await self._pool.fetchrow(
            "SELECT * FROM read_markers WHERE room_id = $1 AND user_id = $2", room_id, user_id
        )
        return ReadMarker(**dict(row)) if row else None
