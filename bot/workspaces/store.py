"""Workspaces, their members and invite codes, in PostgreSQL."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from bot.workspaces.settings import WorkspaceSettings


@dataclass(frozen=True, slots=True)
class Workspace:
    id: str
    space_id: str
    name: str
    host: str
    created_by_bot: bool
    settings: WorkspaceSettings


@dataclass(frozen=True, slots=True)
class Member:
    user_id: str
    membership: str
    role: str


@dataclass(frozen=True, slots=True)
class Invite:
    id: int
    workspace_id: str
    hint: str | None
    """The code's first group, to tell codes apart (None for codes made before it was kept)."""
    created_by: str
    uses_left: int
    expires_at: datetime
    revoked_at: datetime | None


_INVITE_COLUMNS = "id, workspace_id, hint, created_by, uses_left, expires_at, revoked_at"


def _invite(row: Any) -> Invite:
    return Invite(**{k: row[k] for k in _INVITE_COLUMNS.split(", ")})


class _NoUseLeft(Exception):
    pass


def _workspace(row: Any) -> Workspace:
    return Workspace(
        id=row["id"],
        space_id=row["space_id"],
        name=row["name"],
        host=row["host"],
        created_by_bot=row["created_by_bot"],
        settings=WorkspaceSettings.model_validate(row["settings"] or {}),
    )


_COLUMNS = "id, space_id, name, host, created_by_bot, settings"


class WorkspaceStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(
        self,
        space_id: str,
        name: str,
        host: str,
        *,
        created_by_bot: bool,
        origin_event: str | None = None,
    ) -> Workspace:
        """Record a workspace; an existing one for this space is returned unchanged."""
        row = await self._pool.fetchrow(
            f"""
            INSERT INTO workspaces (id, space_id, name, host, created_by_bot, origin_event)
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (space_id) DO UPDATE SET space_id = excluded.space_id
            RETURNING {_COLUMNS}
            """,
            f"ws_{secrets.token_hex(6)}",
            space_id,
            name,
            host,
            created_by_bot,
            origin_event,
        )
        return _workspace(row)

    async def by_origin(self, event_id: str) -> Workspace | None:
        """The workspace a `!ws create` event made, if it was handled before."""
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM workspaces WHERE origin_event = $1", event_id
        )
        return _workspace(row) if row else None

    async def get(self, workspace_id: str) -> Workspace | None:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM workspaces WHERE id = $1", workspace_id
        )
        return _workspace(row) if row else None

    async def every(self) -> list[Workspace]:
        rows = await self._pool.fetch(f"SELECT {_COLUMNS} FROM workspaces ORDER BY created_at")
        return [_workspace(row) for row in rows]

    async def by_space(self, space_id: str) -> Workspace | None:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM workspaces WHERE space_id = $1", space_id
        )
        return _workspace(row) if row else None

    async def of_member(self, user_id: str) -> list[Workspace]:
        """Workspaces the user is in or invited to, oldest first."""
        rows = await self._pool.fetch(
            f"""
            SELECT {", ".join("w." + c.strip() for c in _COLUMNS.split(","))}
            FROM workspaces w JOIN workspace_members m ON m.workspace_id = w.id
            WHERE m.user_id = $1 AND m.membership IN ('join', 'invite')
            ORDER BY w.created_at
            """,
            user_id,
        )
        return [_workspace(row) for row in rows]

    async def set_host(self, workspace_id: str, host: str) -> None:
        await self._pool.execute(
            "UPDATE workspaces SET host = $2 WHERE id = $1", workspace_id, host
        )

    async def set_settings(self, workspace_id: str, settings: WorkspaceSettings) -> None:
        await self._pool.execute(
            "UPDATE workspaces SET settings = $2 WHERE id = $1",
            workspace_id,
            settings.model_dump(mode="json"),
        )

    # Members ---------------------------------------------------------------------------------

    async def set_membership(self, workspace_id: str, user_id: str, membership: str) -> None:
        await self._pool.execute(
            """
            INSERT INTO workspace_members (workspace_id, user_id, membership) VALUES ($1, $2, $3)
            ON CONFLICT (workspace_id, user_id) DO UPDATE
            SET membership = excluded.membership, updated_at = now()
            """,
            workspace_id,
            user_id,
            membership,
        )

    async def set_roles(self, workspace_id: str, roles: dict[str, str]) -> None:
        """Mirror the roles read from the space's power levels (everyone else: member)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE workspace_members SET role = 'member' WHERE workspace_id = $1",
                workspace_id,
            )
            await conn.executemany(
                """
                INSERT INTO workspace_members (workspace_id, user_id, membership, role)
                VALUES ($1, $2, 'leave', $3)
                ON CONFLICT (workspace_id, user_id) DO UPDATE
                SET role = excluded.role, updated_at = now()
                """,
                [(workspace_id, user, role) for user, role in roles.items()],
            )

    async def members(self, workspace_id: str, *, joined_only: bool = False) -> list[Member]:
        rows = await self._pool.fetch(
            """
            SELECT user_id, membership, role FROM workspace_members
            WHERE workspace_id = $1 AND ($2 = false OR membership = 'join')
            ORDER BY CASE role WHEN 'host' THEN 0 WHEN 'delegate' THEN 1 ELSE 2 END, user_id
            """,
            workspace_id,
            joined_only,
        )
        return [Member(**dict(row)) for row in rows]

    async def member(self, workspace_id: str, user_id: str) -> Member | None:
        row = await self._pool.fetchrow(
            """
            SELECT user_id, membership, role FROM workspace_members
            WHERE workspace_id = $1 AND user_id = $2
            """,
            workspace_id,
            user_id,
        )
        return Member(**dict(row)) if row else None

    # Invite codes ----------------------------------------------------------------------------

    async def add_invite(
        self,
        workspace_id: str,
        code_hash: bytes,
        hint: str,
        created_by: str,
        uses: int,
        expires_at: datetime,
    ) -> None:
        await self._pool.execute(
            """
            INSERT INTO workspace_invites
                (workspace_id, code_hash, hint, created_by, uses_left, expires_at)
            VALUES ($1, $2, $3, $4, $5, $6)
            """,
            workspace_id,
            code_hash,
            hint,
            created_by,
            uses,
            expires_at,
        )

    async def find_invite(self, code_hash: bytes) -> tuple[Invite | None, str]:
        """The code's invite and "ok", or (None, "unknown"|"expired"|"used"|"revoked")."""
        row = await self._pool.fetchrow(
            f"SELECT {_INVITE_COLUMNS}, expires_at < now() AS expired "
            "FROM workspace_invites WHERE code_hash = $1",
            code_hash,
        )
        if row is None:
            return None, "unknown"
        if row["revoked_at"] is not None:
            return None, "revoked"
        if row["expired"]:
            return None, "expired"
        if row["uses_left"] <= 0:
            return None, "used"
        return _invite(row), "ok"

    async def spend_invite(self, invite_id: int, event_id: str, user_id: str) -> bool:
        """Spend one use of an open code for the `!ws join` event `event_id` (again for the same
        event: nothing more is spent). False if the code has no use left (or closed meanwhile)."""
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                inserted = await conn.fetchval(
                    """
                    INSERT INTO workspace_invite_uses (event_id, invite_id, user_id)
                    VALUES ($1, $2, $3) ON CONFLICT (event_id) DO NOTHING RETURNING true
                    """,
                    event_id,
                    invite_id,
                    user_id,
                )
                if not inserted:
                    return True
                spent = await conn.fetchval(
                    """
                    UPDATE workspace_invites SET uses_left = uses_left - 1
                    WHERE id = $1 AND uses_left > 0 AND revoked_at IS NULL
                      AND expires_at > now()
                    RETURNING id
                    """,
                    invite_id,
                )
                if spent is None:
                    raise _NoUseLeft  # rolls the use's record back
        except _NoUseLeft:
            return False
        return True

    async def give_back_invite(self, event_id: str) -> None:
        """A join that failed: the use its event spent is given back."""
        async with self._pool.acquire() as conn, conn.transaction():
            invite_id = await conn.fetchval(
                "DELETE FROM workspace_invite_uses WHERE event_id = $1 RETURNING invite_id",
                event_id,
            )
            if invite_id is not None:
                await conn.execute(
                    "UPDATE workspace_invites SET uses_left = uses_left + 1 WHERE id = $1",
                    invite_id,
                )

    async def open_invites(self, workspace_id: str) -> list[Invite]:
        rows = await self._pool.fetch(
            f"""
            SELECT {_INVITE_COLUMNS} FROM workspace_invites
            WHERE workspace_id = $1 AND revoked_at IS NULL AND uses_left > 0
              AND expires_at > now()
            ORDER BY created_at
            """,
            workspace_id,
        )
        return [_invite(row) for row in rows]

    async def revoke_invite(self, invite_id: int) -> None:
        await self._pool.execute(
            "UPDATE workspace_invites SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
            invite_id,
        )

    # The workspace of a DM ---------------------------------------------------------------------

    async def set_direct_choice(self, user_id: str, workspace_id: str) -> None:
        await self._pool.execute(
            """
            INSERT INTO direct_workspace (user_id, workspace_id) VALUES ($1, $2)
            ON CONFLICT (user_id) DO UPDATE SET workspace_id = excluded.workspace_id
            """,
            user_id,
            workspace_id,
        )

    async def direct_choice(self, user_id: str) -> str | None:
        value = await self._pool.fetchval(
            "SELECT workspace_id FROM direct_workspace WHERE user_id = $1", user_id
        )
        return str(value) if value is not None else None
