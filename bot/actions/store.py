"""Actions in PostgreSQL. Every change of status is one UPDATE … WHERE status = … RETURNING: of
many ✅ arriving at once, or the same one delivered twice, exactly one starts the run."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from bot.commands.parser import number


@dataclass(frozen=True, slots=True)
class Action:
    id: int
    workspace_id: str
    room_id: str
    request_event_id: str | None
    card_event_id: str | None
    tool: str
    tool_version: str
    args: dict[str, Any]
    requested_by: str
    source: str
    status: str
    idempotency_key: str
    confirmed_by: str | None
    cancelled_by: str | None
    result: dict[str, Any] | None
    error: str | None
    expires_at: datetime
    created_at: datetime
    started_at: datetime | None
    summary: str | None = None
    """The result as people read it (done), once the run ended."""

    @property
    def code(self) -> str:
        """What people type: A12."""
        return f"A{self.id}"


_COLUMNS = (
    "id, workspace_id, room_id, request_event_id, card_event_id, tool, tool_version, args, "
    "requested_by, source, status, idempotency_key, confirmed_by, cancelled_by, result, error, "
    "expires_at, created_at, started_at, summary"
)


def _action(row: Any) -> Action:
    return Action(**dict(row))


def parse_code(text: str) -> int | None:
    """`A12`, `a12` or `12` → 12."""
    return number(text.strip().upper().removeprefix("A"))


class ActionStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(
        self,
        workspace_id: str,
        room_id: str,
        tool: str,
        tool_version: str,
        args: dict[str, Any],
        requested_by: str,
        expires_at: datetime,
        *,
        request_event_id: str | None,
        source: str = "act",
    ) -> tuple[Action, bool]:
        """A new proposal, or the one this request made before. Returns (action, is it new)."""
        row = await self._pool.fetchrow(
            f"""
            INSERT INTO actions (workspace_id, room_id, request_event_id, tool, tool_version, args,
                                 requested_by, source, idempotency_key, expires_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            ON CONFLICT (request_event_id) DO NOTHING
            RETURNING {_COLUMNS}
            """,
            workspace_id,
            room_id,
            request_event_id,
            tool,
            tool_version,
            args,
            requested_by,
            source,
            f"doryo-{secrets.token_hex(12)}",
            expires_at,
        )
        if row is not None:
            return _action(row), True
        existing = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM actions WHERE request_event_id = $1", request_event_id
        )
        return _action(existing), False

    async def get(self, action_id: int) -> Action | None:
        row = await self._pool.fetchrow(f"SELECT {_COLUMNS} FROM actions WHERE id = $1", action_id)
        return _action(row) if row else None

    async def by_card(self, card_event_id: str) -> Action | None:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM actions WHERE card_event_id = $1", card_event_id
        )
        return _action(row) if row else None

    async def set_card(self, action_id: int, card_event_id: str) -> None:
        await self._pool.execute(
            "UPDATE actions SET card_event_id = $2 WHERE id = $1", action_id, card_event_id
        )

    async def of_workspace(self, workspace_id: str, *, open_only: bool) -> list[Action]:
        rows = await self._pool.fetch(
            f"""
            SELECT {_COLUMNS} FROM actions
            WHERE workspace_id = $1 AND ($2 = false OR status IN ('awaiting_confirm', 'running'))
            ORDER BY id DESC LIMIT 50
            """,
            workspace_id,
            open_only,
        )
        return [_action(row) for row in rows]

    # Transitions: each is one statement, guarded by the status it leaves. -----------------------

    async def start(
        self, action_id: int, confirmed_by: str, runner: int | None = None
    ) -> Action | None:
        """awaiting_confirm → running, if not expired. None: someone else won, or too late.

        `runner`: the worker key of the process that runs it (bot.core.leases)."""
        row = await self._pool.fetchrow(
            f"""
            UPDATE actions SET status = 'running', confirmed_by = $2, started_at = now(),
                runner = $3
            WHERE id = $1 AND status = 'awaiting_confirm' AND expires_at > now()
            RETURNING {_COLUMNS}
            """,
            action_id,
            confirmed_by,
            runner,
        )
        return _action(row) if row else None

    async def cancel(self, action_id: int, cancelled_by: str) -> Action | None:
        row = await self._pool.fetchrow(
            f"""
            UPDATE actions SET status = 'cancelled', cancelled_by = $2, finished_at = now()
            WHERE id = $1 AND status = 'awaiting_confirm'
            RETURNING {_COLUMNS}
            """,
            action_id,
            cancelled_by,
        )
        return _action(row) if row else None

    async def finish(
        self,
        action_id: int,
        status: str,
        *,
        result: dict[str, Any] | None,
        error: str | None,
        summary: str | None = None,
    ) -> Action | None:
        """running → done | error."""
        row = await self._pool.fetchrow(
            f"""
            UPDATE actions SET status = $2, result = $3, error = $4, summary = $5,
                               finished_at = now()
            WHERE id = $1 AND status = 'running'
            RETURNING {_COLUMNS}
            """,
            action_id,
            status,
            result,
            error,
            summary,
        )
        return _action(row) if row else None

    async def mark_reported(self, action_id: int) -> None:
        await self._pool.execute("UPDATE actions SET reported_at = now() WHERE id = $1", action_id)

    async def unreported(self, finished_before: datetime) -> list[Action]:
        """Actions that ended before then whose end is not on their card yet (a crash, or the
        homeserver away, between writing the status and editing the card)."""
        rows = await self._pool.fetch(
            f"""
            SELECT {_COLUMNS} FROM actions
            WHERE status IN ('done', 'error', 'cancelled', 'expired') AND reported_at IS NULL
              AND finished_at < $1
            """,
            finished_before,
        )
        return [_action(row) for row in rows]

    async def expire_due(self) -> list[Action]:
        rows = await self._pool.fetch(
            f"""
            UPDATE actions SET status = 'expired', finished_at = now()
            WHERE status = 'awaiting_confirm' AND expires_at <= now()
            RETURNING {_COLUMNS}
            """
        )
        return [_action(row) for row in rows]

    async def orphaned(
        self, started_before: datetime, live_runners: set[int]
    ) -> list[tuple[Action, int | None]]:
        """Running actions whose process is gone, with the worker key they were run under: the
        key's lock is not held (`live_runners`), or none was recorded and the run began before
        `started_before`."""
        rows = await self._pool.fetch(
            f"""
            SELECT {_COLUMNS}, runner FROM actions
            WHERE status = 'running'
              AND (runner IS NULL AND started_at < $1
                   OR runner IS NOT NULL AND runner <> ALL($2::integer[]))
            """,
            started_before,
            sorted(live_runners),
        )
        found = []
        for row in rows:
            values = dict(row)
            runner = values.pop("runner")
            found.append((Action(**values), runner))
        return found

    async def adopt(self, action_id: int, runner: int | None, new_runner: int | None) -> bool:
        """Take over a running action from a process that is gone; False if another took it."""
        result = await self._pool.execute(
            """
            UPDATE actions SET runner = $3
            WHERE id = $1 AND status = 'running' AND runner IS NOT DISTINCT FROM $2
            """,
            action_id,
            runner,
            new_runner,
        )
        return bool(result.endswith(" 1"))

    async def claim_host_notice(self, action_id: int) -> bool:
        """True once per action: the caller DMs the host."""
        result = await self._pool.execute(
            "UPDATE actions SET host_notified = true WHERE id = $1 AND NOT host_notified",
            action_id,
        )
        return bool(result.endswith(" 1"))

    async def claim_outsider_notice(self, action_id: int, user_id: str) -> bool:
        """True the first time for this person and card: they are told once."""
        result = await self._pool.execute(
            "INSERT INTO action_notices (action_id, user_id) VALUES ($1, $2) "
            "ON CONFLICT DO NOTHING",
            action_id,
            user_id,
        )
        return bool(result.endswith(" 1"))

    # The audit log -------------------------------------------------------------------------------

    async def record_run(
        self,
        action: Action,
        outcome: str,
        *,
        result: dict[str, Any] | None,
        external_ids: list[str],
        error: str | None,
        duration_ms: int,
        started_at: datetime,
    ) -> None:
        await self._pool.execute(
            """
            INSERT INTO tool_runs (action_id, workspace_id, room_id, tool, tool_version, args,
                                   requested_by, confirmed_by, outcome, result, external_ids,
                                   error, duration_ms, started_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
            """,
            action.id,
            action.workspace_id,
            action.room_id,
            action.tool,
            action.tool_version,
            action.args,
            action.requested_by,
            action.confirmed_by,
            outcome,
            result,
            external_ids,
            error,
            duration_ms,
            started_at,
        )
