"""The llm_usage table: one row per call to a provider (each retry and fallback is a call), and
the sums that budgets, `!usage` and the admin API read from it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from bot.llm.types import CallContext, Outcome, Usage

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UsageRecord:
    provider: str
    model: str
    """The provider's model name (without the provider)."""
    usage: Usage
    cost_usd: Decimal | None
    latency_ms: int
    ttft_ms: int | None
    streamed: bool
    context: CallContext
    outcome: Outcome
    error: str | None = None


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One recorded call, as stored."""

    id: int
    created_at: datetime
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: Decimal | None
    latency_ms: int
    ttft_ms: int | None
    streamed: bool
    agent: str | None
    blueprint_version: int | None
    workspace_id: str | None
    room_id: str | None
    user_id: str | None
    outcome: str
    error: str | None


@dataclass(frozen=True, slots=True)
class UsageSummary:
    """Calls of one agent with one model over a period."""

    agent: str | None
    model: str
    """"<provider>/<model>"."""
    calls: int
    failures: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: Decimal
    unpriced_calls: int
    """Successful calls whose model has no known price (not in cost_usd)."""
    median_latency_ms: int | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (the admin API): USD as a string, to keep its precision."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["cost_usd"] = str(self.cost_usd)
        return data


@dataclass(frozen=True, slots=True)
class Spend:
    workspace_usd: Decimal
    agent_usd: Decimal


def month_start(now: datetime | None = None) -> datetime:
    now = now or datetime.now(UTC)
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month_start(now: datetime | None = None) -> datetime:
    start = month_start(now)
    return (start + timedelta(days=32)).replace(day=1)


PERIODS = {"7d": 7, "30d": 30}


class UsageStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def record(self, record: UsageRecord) -> None:
        await self.record_many([record])

    async def record_many(self, records: Sequence[UsageRecord]) -> None:
        await self._pool.executemany(
            """
            INSERT INTO llm_usage (
                provider, model, input_tokens, output_tokens, cached_tokens, cache_write_tokens,
                cost_usd, latency_ms, ttft_ms, streamed, agent, blueprint_version, workspace_id,
                room_id, user_id, outcome, error
            ) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
            """,
            [
                (
                    r.provider,
                    r.model,
                    r.usage.input_tokens,
                    r.usage.output_tokens,
                    r.usage.cached_tokens,
                    r.usage.cache_write_tokens,
                    r.cost_usd,
                    r.latency_ms,
                    r.ttft_ms,
                    r.streamed,
                    r.context.agent,
                    r.context.blueprint_version,
                    r.context.workspace_id,
                    r.context.room_id,
                    r.context.user_id,
                    r.outcome,
                    r.error,
                )
                for r in records
            ],
        )

    async def monthly_spend(
        self, workspace_id: str | None, agent: str | None, now: datetime | None = None
    ) -> Spend:
        """USD spent this UTC calendar month by the workspace, and by the agent in it."""
        since = month_start(now)
        if workspace_id is None:
            row = await self._pool.fetchrow(
                """
                SELECT 0::numeric AS workspace, coalesce(sum(cost_usd), 0) AS agent
                FROM llm_usage
                WHERE workspace_id IS NULL AND agent = $1 AND created_at >= $2
                """,
                agent,
                since,
            )
        else:
            row = await self._pool.fetchrow(
                """
                SELECT coalesce(sum(cost_usd), 0) AS workspace,
                       coalesce(sum(cost_usd) FILTER (WHERE agent = $2), 0) AS agent
                FROM llm_usage
                WHERE workspace_id = $1 AND created_at >= $3
                """,
                workspace_id,
                agent,
                since,
            )
        assert row is not None
        return Spend(workspace_usd=row["workspace"], agent_usd=row["agent"])

    async def summary(
        self, *, days: int, workspace_id: str | None = None, now: datetime | None = None
    ) -> list[UsageSummary]:
        """Per agent and model over the last `days` days; one workspace, or all of them."""
        since = (now or datetime.now(UTC)) - timedelta(days=days)
        rows = await self._pool.fetch(
            """
            SELECT agent, provider || '/' || model AS model,
                   count(*) AS calls,
                   count(*) FILTER (WHERE outcome <> 'ok') AS failures,
                   coalesce(sum(input_tokens), 0) AS input_tokens,
                   coalesce(sum(output_tokens), 0) AS output_tokens,
                   coalesce(sum(cached_tokens), 0) AS cached_tokens,
                   coalesce(sum(cost_usd), 0) AS cost_usd,
                   count(*) FILTER (WHERE outcome = 'ok' AND cost_usd IS NULL) AS unpriced_calls,
                   percentile_disc(0.5) WITHIN GROUP (ORDER BY latency_ms)
                       FILTER (WHERE outcome = 'ok') AS median_latency_ms
            FROM llm_usage
            WHERE created_at >= $1 AND ($2::text IS NULL OR workspace_id = $2)
            GROUP BY agent, provider, model
            ORDER BY cost_usd DESC, calls DESC, agent NULLS LAST, model
            """,
            since,
            workspace_id,
        )
        return [UsageSummary(**dict(row)) for row in rows]

    async def recent(self, limit: int = 100, workspace_id: str | None = None) -> list[UsageRow]:
        """The latest calls, newest first."""
        rows = await self._pool.fetch(
            """
            SELECT id, created_at, provider, model, input_tokens, output_tokens, cached_tokens,
                   cost_usd, latency_ms, ttft_ms, streamed, agent, blueprint_version,
                   workspace_id, room_id, user_id, outcome, error
            FROM llm_usage
            WHERE $2::text IS NULL OR workspace_id = $2
            ORDER BY id DESC LIMIT $1
            """,
            limit,
            workspace_id,
        )
        return [UsageRow(**dict(row)) for row in rows]


class UsageRecorder:
    """Writes usage records in the background, in batches, so that recording a call costs the
    call nothing. `flush` waits until everything added so far is written (tests, shutdown).

    A record still queued when the process dies is lost; a database that is down loses the
    records of the batches that failed (logged), never the calls themselves.
    """

    def __init__(
        self, store: UsageStore, *, max_queue: int = 10_000, max_batch: int = 200
    ) -> None:
        self._store = store
        self._queue: asyncio.Queue[UsageRecord] = asyncio.Queue(max_queue)
        self._max_batch = max_batch
        self._task: asyncio.Task[None] | None = None

    def add(self, record: UsageRecord) -> None:
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            log.error(
                "LLM usage queue full: a call to %s/%s is not recorded",
                record.provider,
                record.model,
            )
            return
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="llm-usage-recorder")

    async def flush(self) -> None:
        await self._queue.join()

    async def close(self, timeout: float = 5) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self.flush()
        except TimeoutError:
            log.error("%d LLM usage records not written at shutdown", self._queue.qsize())
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._store.record_many(batch)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as e:
                log.error("could not record %d LLM calls: %s", len(batch), e)
            except Exception:
                log.exception("could not record %d LLM calls", len(batch))
            finally:
                for _ in batch:
                    self._queue.task_done()
