"""Retention that runs: a workspace's messages older than its `retention` (days) are deleted
from the session history and from memory, in the background, in batches of 1,000 rows (each
its own short transaction: never a long lock), once an hour.

What goes: the history's messages (`messages`) and the memories made of them (kind `message`;
with memory.retention_mode `compact` they are first summarised into one memory per room and
day, which stays). What stays: `!remember` facts, session summaries and documents, which people
keep or forget on purpose, and the rooms' own history on the homeserver (Doryo deletes only its
copies). The last run per workspace is kept (`retention_runs`) for `!ws settings` and the admin
API. One run at a time in the whole deployment (a PostgreSQL advisory lock).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from bot.workspaces.store import Workspace

if TYPE_CHECKING:
    from bot.context import Context

log = logging.getLogger(__name__)

INTERVAL = 3600.0
BATCH = 1000
LOCK = 0x446F72796F5245  # "DoryoRE": the advisory lock one run holds


@dataclass(frozen=True, slots=True)
class RetentionRun:
    workspace_id: str
    ran_at: datetime
    cutoff: datetime
    messages: int
    memories: int


def retention_days(ctx: Context, workspace: Workspace) -> int:
    """The workspace's own setting, else the server's (0: kept forever)."""
    own = workspace.settings.memory_retention_days
    return ctx.config.memory.retention_days if own is None else own


async def apply(
    ctx: Context, workspace: Workspace, *, now: datetime | None = None, batch: int = BATCH
) -> RetentionRun | None:
    """Delete what is older than the workspace's retention; None if it keeps everything."""
    days = retention_days(ctx, workspace)
    if days <= 0:
        return None
    ran_at = now or datetime.now(UTC)
    cutoff = ran_at - timedelta(days=days)
    messages = 0
    while True:
        status = await ctx.db.execute(
            """
            DELETE FROM messages WHERE event_id IN (
                SELECT m.event_id FROM messages m JOIN sessions s ON s.room_id = m.room_id
                WHERE s.workspace_id = $1 AND m.sent_at < $2
                LIMIT $3
            )
            """,
            workspace.id,
            cutoff,
            batch,
        )
        done = int(status.split()[-1])
        messages += done
        if done < batch:
            break
    memories = 0
    if ctx.memory is not None:
        memories = (await ctx.memory.prune(workspace.id, days=days, now=ran_at)).deleted
    run = RetentionRun(workspace.id, ran_at, cutoff, messages, memories)
    await ctx.db.execute(
        """
        INSERT INTO retention_runs (workspace_id, ran_at, cutoff, messages, memories)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (workspace_id) DO UPDATE SET ran_at = $2, cutoff = $3, messages = $4,
                                                 memories = $5
        """,
        run.workspace_id,
        run.ran_at,
        run.cutoff,
        run.messages,
        run.memories,
    )
    if messages or memories:
        log.info(
            "retention: %s: deleted %d messages and %d memories older than %s",
            workspace.id,
            messages,
            memories,
            cutoff.date(),
        )
    return run


async def apply_all(ctx: Context) -> list[RetentionRun] | None:
    """Retention for every workspace; None if another process is running it now."""
    async with ctx.db.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK):
            return None
        try:
            runs = []
            for workspace in await ctx.workspaces.every():
                if (run := await apply(ctx, workspace)) is not None:
                    runs.append(run)
            return runs
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK)


async def last_run(ctx: Context, workspace_id: str) -> RetentionRun | None:
    row = await ctx.db.fetchrow(
        "SELECT workspace_id, ran_at, cutoff, messages, memories FROM retention_runs "
        "WHERE workspace_id = $1",
        workspace_id,
    )
    return RetentionRun(**dict(row)) if row else None
