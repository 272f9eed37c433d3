"""What the bot knows of the rooms it is in: its membership, who is in them (and their display
names), which are direct chats, and what it published there."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True, slots=True)
class Room:
    room_id: str
    membership: str
    is_direct: bool
    """Exactly one person is in the room with the bot (by its members, never by the invite's
    is_direct flag). A session or a space is never treated as a DM, whatever its members."""
    direct_user: str | None
    invited_by: str | None
    commands_hash: str | None
    members_known: bool


_ROOM_COLUMNS = (
    "room_id, membership, is_direct, direct_user, invited_by, commands_hash, members_known"
)

# A room is direct when exactly one person is in it (joined or invited) besides the bot's own
# users, and it is neither a session nor a workspace's space.
_REFRESH_DIRECT = """
UPDATE rooms SET direct_user = d.user_id, is_direct = d.user_id IS NOT NULL, updated_at = now()
FROM (
    SELECT CASE WHEN count(*) = 1 THEN min(user_id) END AS user_id
    FROM room_members WHERE room_id = $1 AND membership IN ('join', 'invite')
) AS d
WHERE rooms.room_id = $1
  AND (rooms.direct_user IS DISTINCT FROM d.user_id
       OR rooms.is_direct IS DISTINCT FROM (d.user_id IS NOT NULL))
"""


class RoomStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, room_id: str) -> Room | None:
        row = await self._pool.fetchrow(
            f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE room_id = $1", room_id
        )
        return Room(**dict(row)) if row else None

    async def record_invite(self, room_id: str, inviter: str) -> None:
        await self._pool.execute(
            """
            INSERT INTO rooms (room_id, membership, invited_by) VALUES ($1, 'invite', $2)
            ON CONFLICT (room_id) DO UPDATE SET
                membership = 'invite', invited_by = excluded.invited_by, updated_at = now()
            """,
            room_id,
            inviter,
        )

    async def set_membership(self, room_id: str, membership: str) -> None:
        await self._pool.execute(
            """
            INSERT INTO rooms (room_id, membership) VALUES ($1, $2)
            ON CONFLICT (room_id) DO UPDATE
            SET membership = excluded.membership, updated_at = now()
            """,
            room_id,
            membership,
        )

    async def set_members(
        self,
        room_id: str,
        memberships: dict[str, str],
        *,
        complete: bool = False,
        names: Mapping[str, str | None] | None = None,
    ) -> None:
        """Record people's membership in a room (`complete`: this is everyone, read from the
        room's state), their display names there (`names`), and whether that makes it a DM."""
        names = names or {}
        async with self._pool.acquire() as conn, conn.transaction():
            if complete:
                await conn.execute("DELETE FROM room_members WHERE room_id = $1", room_id)
                await conn.execute(
                    "UPDATE rooms SET members_known = true WHERE room_id = $1", room_id
                )
            await conn.executemany(
                """
                INSERT INTO room_members (room_id, user_id, membership, displayname)
                VALUES ($1, $2, $3, $4)
                ON CONFLICT (room_id, user_id) DO UPDATE
                SET membership = excluded.membership, displayname = excluded.displayname
                """,
                [
                    (room_id, user, membership, names.get(user))
                    for user, membership in memberships.items()
                ],
            )
            await conn.execute(_REFRESH_DIRECT, room_id)

    async def direct(self, room_id: str) -> bool | None:
        """Whether the bot is in this room with exactly one person, and it is neither a session
        nor a space (one query: this is asked for every message). None if the bot is in it but
        never read its members."""
        row = await self._pool.fetchrow(
            """
            SELECT r.members_known,
                   r.is_direct
                   AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.room_id = r.room_id)
                   AND NOT EXISTS (SELECT 1 FROM workspaces w WHERE w.space_id = r.room_id)
                   AS direct
            FROM rooms r WHERE r.room_id = $1 AND r.membership = 'join'
            """,
            room_id,
        )
        if row is None:
            return False
        return bool(row["direct"]) if row["members_known"] else None

    async def unknown_members(self) -> list[str]:
        """Rooms the bot is in whose member list it never read (joined before it kept them)."""
        rows = await self._pool.fetch(
            "SELECT room_id FROM rooms WHERE membership = 'join' AND NOT members_known"
        )
        return [row["room_id"] for row in rows]

    async def set_commands_hash(self, room_id: str, commands_hash: str) -> None:
        await self._pool.execute(
            "UPDATE rooms SET commands_hash = $2, updated_at = now() WHERE room_id = $1",
            room_id,
            commands_hash,
        )

    async def direct_with(self, user_id: str) -> str | None:
        """The latest direct chat the bot is in with this person (and no one else)."""
        room_id = await self._pool.fetchval(
            """
            SELECT room_id FROM rooms r
            WHERE is_direct AND direct_user = $1 AND membership = 'join'
              AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.room_id = r.room_id)
              AND NOT EXISTS (SELECT 1 FROM workspaces w WHERE w.space_id = r.room_id)
            ORDER BY updated_at DESC LIMIT 1
            """,
            user_id,
        )
        return str(room_id) if room_id is not None else None

    async def joined_by(self, user_id: str, room_ids: list[str]) -> set[str]:
        """Which of these rooms this person is in (by the rooms' member events)."""
        rows = await self._pool.fetch(
            """
            SELECT room_id FROM room_members
            WHERE user_id = $1 AND membership = 'join' AND room_id = any($2::text[])
            """,
            user_id,
            room_ids,
        )
        return {row["room_id"] for row in rows}

    async def joined(self) -> list[str]:
        rows = await self._pool.fetch("SELECT room_id FROM rooms WHERE membership = 'join'")
        return [row["room_id"] for row in rows]
