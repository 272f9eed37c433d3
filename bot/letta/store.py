"""The Letta tables (migrations/0007_letta.sql): which agent each workspace and blueprint version
has (letta_agents), and the Letta tool calls waiting as action cards (letta_approvals)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg


@dataclass(frozen=True, slots=True)
class LettaAgent:
    workspace_id: str
    blueprint: str
    blueprint_version: int
    server: str
    agent_id: str
    summary_sha256: str | None


class LettaAgentStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(
        self, workspace_id: str, blueprint: str, version: int, server: str
    ) -> LettaAgent | None:
        row = await self._pool.fetchrow(
            """
            SELECT workspace_id, blueprint, blueprint_version, server, agent_id, summary_sha256
            FROM letta_agents
            WHERE workspace_id = $1 AND blueprint = $2 AND blueprint_version = $3 AND server = $4
            """,
            workspace_id,
            blueprint,
            version,
            server,
        )
        return LettaAgent(**dict(row)) if row else None

    async def add(self, agent: LettaAgent) -> LettaAgent:
        """Record an agent; if another process recorded one first, that one wins."""
        await self._pool.execute(
            """
            INSERT INTO letta_agents (workspace_id, blueprint, blueprint_version, server,
                                      agent_id, summary_sha256)
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT DO NOTHING
            """,
            agent.workspace_id,
            agent.blueprint,
            agent.blueprint_version,
            agent.server,
            agent.agent_id,
            agent.summary_sha256,
        )
        stored = await self.get(
            agent.workspace_id, agent.blueprint, agent.blueprint_version, agent.server
        )
        assert stored is not None
        return stored

    async def set_summary(self, agent_id: str, sha256: str) -> None:
        await self._pool.execute(
            "UPDATE letta_agents SET summary_sha256 = $2 WHERE agent_id = $1", agent_id, sha256
        )

    async def forget(self, agent_id: str) -> None:
        await self._pool.execute("DELETE FROM letta_agents WHERE agent_id = $1", agent_id)


@dataclass(frozen=True, slots=True)
class Approval:
    """A Letta tool call waiting as an action card (the action's request_event_id is the key)."""

    request_key: str
    agent_id: str
    tool_call_id: str
    request_message_id: str | None
    other_returns: list[dict[str, Any]]
    question_event_id: str
    asked_by: str
    blueprint: str
    blueprint_version: int


_APPROVAL_COLUMNS = (
    "request_key, agent_id, tool_call_id, request_message_id, other_returns, question_event_id, "
    "asked_by, blueprint, blueprint_version"
)


def _approval(row: Any) -> Approval:
    return Approval(**dict(row))


class LettaApprovalStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def add(self, approval: Approval) -> None:
        await self._pool.execute(
            f"""
            INSERT INTO letta_approvals ({_APPROVAL_COLUMNS})
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            ON CONFLICT (request_key) DO NOTHING
            """,
            approval.request_key,
            approval.agent_id,
            approval.tool_call_id,
            approval.request_message_id,
            approval.other_returns,
            approval.question_event_id,
            approval.asked_by,
            approval.blueprint,
            approval.blueprint_version,
        )

    async def remove(self, request_key: str) -> None:
        """The card was not posted after all (its arguments were refused)."""
        await self._pool.execute("DELETE FROM letta_approvals WHERE request_key = $1", request_key)

    async def claim(self, request_key: str) -> Approval | None:
        """The approval whose outcome the caller now sends to Letta; None if it is not one or
        its outcome was sent already (or is being sent)."""
        row = await self._pool.fetchrow(
            f"""
            UPDATE letta_approvals SET reported_at = now()
            WHERE request_key = $1 AND reported_at IS NULL
            RETURNING {_APPROVAL_COLUMNS}
            """,
            request_key,
        )
        return _approval(row) if row else None

    async def release(self, request_key: str) -> None:
        """Letta could not be told: leave it to be sent again later."""
        await self._pool.execute(
            "UPDATE letta_approvals SET reported_at = NULL WHERE request_key = $1", request_key
        )

    async def waiting(self, agent_id: str) -> str | None:
        """The code (A12) of an action this agent waits on, if any: Letta takes no new message
        while a tool call of the agent waits for its result."""
        action_id = await self._pool.fetchval(
            """
            SELECT a.id FROM letta_approvals l JOIN actions a ON a.request_event_id = l.request_key
            WHERE l.agent_id = $1 AND l.reported_at IS NULL
            ORDER BY a.id LIMIT 1
            """,
            agent_id,
        )
        return f"A{action_id}" if action_id is not None else None

    async def settled_unreported(self) -> list[int]:
        """IDs of Letta actions decided (run, failed, cancelled, expired) whose outcome Letta has
        not been sent: a restart came in between, or Letta was away."""
        rows = await self._pool.fetch(
            """
            SELECT a.id FROM letta_approvals l JOIN actions a ON a.request_event_id = l.request_key
            WHERE l.reported_at IS NULL
              AND a.status IN ('done', 'error', 'cancelled', 'expired')
            ORDER BY a.id
            """
        )
        return [int(row["id"]) for row in rows]
