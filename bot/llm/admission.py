"""Admission: whether a call may go, and on which models — monthly budgets (refuse, or switch to
the downgrade model with a note) and rate limits per agent, workspace and user (Redis, atomic
across processes), checked while the first request is built (bot.llm.gate)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.core.config import LlmConfig
from bot.core.errors import BudgetExceeded, RateLimited
from bot.core.tasks import BackgroundTasks, outcome_seen
from bot.llm.budget import BudgetLimits, Budgets, downgraded_message, refused_message
from bot.llm.catalog import ModelCatalog, ModelRef
from bot.llm.ratelimit import RateLimit, RateLimiter, Reservation, Scope, estimate_tokens
from bot.llm.types import CallContext, ChatRequest, Limits
from bot.llm.usage import UsageStore

log = logging.getLogger(__name__)

_DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


@dataclass
class Admitted:
    """A call let through: the models to try, notes for the room, and its rate-limit check."""

    chain: list[ModelRef]
    notes: list[str]
    check: asyncio.Future[Reservation | None] | None
    """The rate-limit check, running while the first request is built, or already counted
    from a lease; None when no limit applies."""
    context: CallContext

    @property
    def reservation(self) -> Reservation | None:
        check = self.check
        if check is None or not check.done() or check.cancelled() or check.exception():
            return None
        return check.result()


class Admission:
    def __init__(
        self,
        config: LlmConfig,
        catalog: ModelCatalog,
        *,
        usage: UsageStore,
        redis: Redis,
        key_prefix: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.catalog = catalog
        self.budgets = Budgets(usage, config.budgets.refresh_seconds, clock)
        self.ratelimiter = RateLimiter(redis, key_prefix)
        self._background = BackgroundTasks()
        rl = config.rate_limits
        budgets = config.budgets
        self.default_limits = Limits(
            agent_requests_per_minute=rl.agent.requests_per_minute,
            agent_tokens_per_minute=rl.agent.tokens_per_minute,
            workspace_requests_per_minute=rl.workspace.requests_per_minute,
            workspace_tokens_per_minute=rl.workspace.tokens_per_minute,
            user_requests_per_minute=rl.user.requests_per_minute,
            user_tokens_per_minute=rl.user.tokens_per_minute,
            agent_monthly_usd=budgets.agent_monthly_usd,
            workspace_monthly_usd=budgets.workspace_monthly_usd,
            at_limit=budgets.at_limit,
            downgrade_model=budgets.downgrade_model,
        )

    async def wait(self, timeout: float) -> None:
        """Until the token counts settled so far are written."""
        await self._background.wait(timeout)

    def scopes(self, context: CallContext, limits: Limits) -> list[Scope]:
        """The rate-limit scopes a call counts against: its agent, workspace and user."""

        def limit(rpm: int | None, tpm: int | None) -> RateLimit:
            return RateLimit(rpm or 0, tpm or 0)

        scopes = []
        if context.agent:
            scopes.append(
                Scope(
                    "agent",
                    f"{context.workspace_id or '-'}/{context.agent}",
                    limit(limits.agent_requests_per_minute, limits.agent_tokens_per_minute),
                )
            )
        if context.workspace_id:
            scopes.append(
                Scope(
                    "workspace",
                    context.workspace_id,
                    limit(
                        limits.workspace_requests_per_minute, limits.workspace_tokens_per_minute
                    ),
                )
            )
        if context.user_id:
            scopes.append(
                Scope(
                    "user",
                    context.user_id,
                    limit(limits.user_requests_per_minute, limits.user_tokens_per_minute),
                )
            )
        return scopes

    async def admit(self, request: ChatRequest) -> Admitted:
        """Raises BudgetExceeded (at the limit, no downgrade) and UnknownModel; a rate limit
        refuses through the check (RateLimited where the request would leave)."""
        chain = self.catalog.chain(request.model, request.fallbacks)
        limits = self.default_limits.merged(request.limits)
        context = request.context
        notes: list[str] = []
        budget = BudgetLimits(
            workspace_monthly_usd=limits.workspace_monthly_usd or Decimal(0),
            agent_monthly_usd=limits.agent_monthly_usd or Decimal(0),
        )
        try:
            reached = await self.budgets.check(context, budget)
        except _DB_ERRORS as e:
            log.error("could not check LLM budgets, letting the call through: %s", e)
            reached = None
        if reached is not None:
            downgrade = limits.downgrade_model if limits.at_limit == "downgrade" else None
            if not downgrade:
                raise BudgetExceeded(refused_message(reached), scope=reached.scope)
            chain = [self.catalog.resolve(downgrade)]
            notes.append(downgraded_message(reached, chain[0].ref))
        estimate = estimate_tokens(
            sum(
                len(m.content) + sum(len(c.arguments_json) for c in m.tool_calls)
                for m in request.messages
            )
            + sum(len(t.description) + 100 for t in request.tools)
        )
        scopes = self.scopes(context, limits)
        check: asyncio.Future[Reservation | None] | None = None
        if (leased := self.ratelimiter.leased(scopes, estimate)) is not None:
            # Counted from this process's lease: nothing to wait for.
            check = asyncio.get_running_loop().create_future()
            check.set_result(leased)
        elif any(not scope.limit.unlimited for scope in scopes):
            check = asyncio.ensure_future(self._acquire(scopes, estimate))
            check.add_done_callback(outcome_seen)  # a cancelled call never waits for it
            # Let the check send its Redis command now: it then runs while the SDK builds the
            # request (CPU work in this task), instead of after it.
            await asyncio.sleep(0)
        return Admitted(chain, notes, check, context)

    async def _acquire(self, scopes: list[Scope], estimate: int) -> Reservation | None:
        try:
            return await self.ratelimiter.acquire(scopes, estimate)
        except RateLimited:
            log.info("LLM call refused: rate limit reached")
            raise
        except (RedisError, OSError) as e:
            log.error("could not check LLM rate limits, letting the call through: %s", e)
            return None

    def settle(self, admitted: Admitted, tokens: int) -> None:
        """Replace the rate limits' token estimate with what was used, in the background."""
        reservation = admitted.reservation
        if reservation is not None and reservation.estimate != tokens:
            self._background.spawn(self.ratelimiter.settle(reservation, tokens), name="llm-settle")

    def spend(self, context: CallContext, cost: Decimal | None) -> None:
        """A call's cost, counted against its budgets at once (the usage table follows)."""
        self.budgets.add(context, cost)
