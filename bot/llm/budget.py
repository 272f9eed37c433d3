"""Monthly USD budgets per workspace and per agent (in a workspace), from the usage table.

Checked before a call: when the month's spend has reached a budget, the call is refused
(BudgetExceeded) or, with at_limit: downgrade and a downgrade model, answered by that model with
a note saying so. Calls already under way when a budget runs out finish, so a budget can be
passed by what those cost.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from bot.core import strings
from bot.llm.types import CallContext
from bot.llm.usage import UsageStore, month_start, next_month_start


@dataclass(frozen=True, slots=True)
class BudgetLimits:
    """USD per UTC calendar month; 0 = no budget."""

    workspace_monthly_usd: Decimal = Decimal(0)
    agent_monthly_usd: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class BudgetReached:
    scope: str
    """workspace or agent."""
    limit: Decimal
    spent: Decimal
    resets_on: datetime


@dataclass
class _Cached:
    expires: float
    month: datetime
    usd: Decimal


class Budgets:
    """Budget checks over a short-lived cache of the month's spend: each process re-reads the
    usage table every `refresh_seconds` per workspace and agent, and counts its own calls at
    once (`add`). Other processes' spend shows up within `refresh_seconds`."""

    def __init__(
        self,
        usage: UsageStore,
        refresh_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._usage = usage
        self._refresh = refresh_seconds
        self._clock = clock
        self._workspaces: dict[str | None, _Cached] = {}
        self._agents: dict[tuple[str | None, str | None], _Cached] = {}

    async def check(
        self, context: CallContext, limits: BudgetLimits, now: datetime | None = None
    ) -> BudgetReached | None:
        """The first budget reached (workspace before agent), or None."""
        workspace_budget = limits.workspace_monthly_usd if context.workspace_id else Decimal(0)
        agent_budget = limits.agent_monthly_usd if context.agent else Decimal(0)
        if workspace_budget <= 0 and agent_budget <= 0:
            return None
        workspace_usd, agent_usd = await self._spend(context, now)
        resets_on = next_month_start(now)
        if workspace_budget > 0 and workspace_usd >= workspace_budget:
            return BudgetReached("workspace", workspace_budget, workspace_usd, resets_on)
        if agent_budget > 0 and agent_usd >= agent_budget:
            return BudgetReached("agent", agent_budget, agent_usd, resets_on)
        return None

    async def _spend(self, context: CallContext, now: datetime | None) -> tuple[Decimal, Decimal]:
        month = month_start(now)
        clock = self._clock()
        ws = self._workspaces.get(context.workspace_id)
        agent = self._agents.get((context.workspace_id, context.agent))
        fresh = (
            ws is not None
            and agent is not None
            and ws.expires > clock
            and agent.expires > clock
            and ws.month == agent.month == month
        )
        if fresh:
            assert ws is not None and agent is not None
            return ws.usd, agent.usd
        spend = await self._usage.monthly_spend(context.workspace_id, context.agent, now)
        if len(self._agents) > 10_000:
            self._prune(clock)
        expires = clock + self._refresh
        self._workspaces[context.workspace_id] = _Cached(expires, month, spend.workspace_usd)
        self._agents[(context.workspace_id, context.agent)] = _Cached(
            expires, month, spend.agent_usd
        )
        return spend.workspace_usd, spend.agent_usd

    def add(self, context: CallContext, usd: Decimal | None) -> None:
        """A call of this process cost `usd`: count it before the next re-read."""
        if not usd:
            return
        if (ws := self._workspaces.get(context.workspace_id)) is not None:
            ws.usd += usd
        if (agent := self._agents.get((context.workspace_id, context.agent))) is not None:
            agent.usd += usd

    def _prune(self, clock: float) -> None:
        self._workspaces = {k: v for k, v in self._workspaces.items() if v.expires > clock}
        self._agents = {k: v for k, v in self._agents.items() if v.expires > clock}


def _usd(amount: Decimal) -> str:
    return f"{amount:,.2f}"


def _day(when: datetime) -> str:
    return f"{when.day} {when:%B}"


def refused_message(reached: BudgetReached) -> str:
    return strings.LLM_BUDGET_REFUSED.format(
        scope=strings.LLM_BUDGET_SCOPES[reached.scope],
        limit=_usd(reached.limit),
        spent=_usd(reached.spent),
        reset=_day(reached.resets_on),
    )


def downgraded_message(reached: BudgetReached, model: str) -> str:
    return strings.LLM_BUDGET_DOWNGRADED.format(
        scope=strings.LLM_BUDGET_SCOPES[reached.scope],
        limit=_usd(reached.limit),
        model=model,
        reset=_day(reached.resets_on),
    )
