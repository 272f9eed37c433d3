"""Which rooms are encrypted, for the bot's device (mautrix.crypto's StateStore).

A room is encrypted from its first `m.room.encryption` state event on, for good. The bot learns
it three ways: the state event in a transaction (seen as it is journaled, before the room's
other events are handled: a reply a moment later is already encrypted); the room's state read
from the homeserver the first time the bot sends there (a room encrypted before the bot
joined, whose state the homeserver never pushes); and the rows kept in `room_encryption`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

import asyncpg
from mautrix.crypto import StateStore
from mautrix.types import JSON as MautrixJSON
from mautrix.types import RoomEncryptionStateEventContent, RoomID, UserID

log = logging.getLogger(__name__)

ReadState = Callable[[str], Awaitable[dict[str, Any] | None]]
"""Reads a room's m.room.encryption content from the homeserver (None: the room has none).
Raises StateUnknown when the bot may not read it (not in the room yet)."""


class StateUnknown(Exception):
    """The room's state cannot be read by the bot now."""


class RoomEncryption(StateStore):
    def __init__(self, pool: asyncpg.Pool, read_state: ReadState) -> None:
        self._pool = pool
        self._read_state = read_state
        self._known: dict[str, dict[str, Any] | None] = {}
        """room → its m.room.encryption content, or None: checked, not encrypted."""

    def saw(self, room_id: str, content: dict[str, Any]) -> None:
        """An m.room.encryption state event arrived: the room is encrypted from now on."""
        self._known[room_id] = content

    async def record(self, room_id: str, content: dict[str, Any]) -> None:
        self.saw(room_id, content)
        await self._pool.execute(
            """
            INSERT INTO room_encryption (room_id, content) VALUES ($1, $2::text::jsonb)
            ON CONFLICT (room_id) DO UPDATE SET content = excluded.content
            """,
            room_id,
            json.dumps(content),
        )
        await self._pool.execute(
            "UPDATE rooms SET encryption_checked = true WHERE room_id = $1", room_id
        )

    async def content(self, room_id: str) -> dict[str, Any] | None:
        """The room's encryption settings, or None if it is not encrypted."""
        if room_id in self._known:
            return self._known[room_id]
        row = await self._pool.fetchrow(
            """
            SELECT e.content::text AS content, coalesce(r.encryption_checked, false) AS checked
            FROM (SELECT $1::text AS room_id) AS q
            LEFT JOIN room_encryption e USING (room_id)
            LEFT JOIN rooms r USING (room_id)
            """,
            room_id,
        )
        assert row is not None
        if row["content"] is not None:
            found: dict[str, Any] | None = json.loads(row["content"])
        elif row["checked"]:
            found = None
        else:
            try:
                found = await self._read_state(room_id)
            except StateUnknown:
                return self._known.get(room_id)  # not in the room: nothing is sent there
            if found is not None:
                await self.record(room_id, found)
            else:
                await self._pool.execute(
                    "UPDATE rooms SET encryption_checked = true WHERE room_id = $1", room_id
                )
        # Encryption is never turned off: whichever of this read and a state event seen
        # meanwhile says "encrypted" wins.
        if found is not None:
            self._known[room_id] = found
            return found
        return self._known.setdefault(room_id, None)

    async def is_encrypted(self, room_id: RoomID) -> bool:
        return await self.content(room_id) is not None

    async def get_encryption_info(self, room_id: RoomID) -> RoomEncryptionStateEventContent | None:
        content = await self.content(room_id)
        if content is None:
            return None
        try:
            return RoomEncryptionStateEventContent.deserialize(cast(MautrixJSON, content))
        except Exception:  # any JSON a member put in the state event
            log.warning("room %s has an m.room.encryption event that does not parse", room_id)
            return None

    async def find_shared_rooms(self, user_id: UserID) -> list[RoomID]:
        """Encrypted rooms this person is in or invited to (their device changes rotate the
        bot's keys there)."""
        rows = await self._pool.fetch(
            """
            SELECT m.room_id FROM room_members m JOIN room_encryption e USING (room_id)
            WHERE m.user_id = $1 AND m.membership IN ('join', 'invite')
            """,
            user_id,
        )
        return [RoomID(row["room_id"]) for row in rows]
