"""LLMRouter: one `chat` and one `stream` over every configured provider.

A call goes:
1. the model chain: the request's model (or llm.default_model), then its fallbacks (or
   llm.fallbacks), aliases resolved, duplicates dropped;
2. budgets (usage table, re-read every llm.budgets.refresh_seconds): refuse, or switch the
   chain to the downgrade model, with a note;
3. rate limits (Redis, atomic across processes): checked while the SDK builds the first
   request, which waits for the answer before it leaves (providers.gated): a refused call
   sends nothing;
4. each model in turn: skipped while its provider's circuit is open; otherwise tried, and
   retried with backoff on retryable errors (429 honouring retry-after, 5xx, timeouts, hangs);
5. every try is recorded in llm_usage with its tokens, cost, latency and outcome, written in
   the background (UsageRecorder; `flush` waits for it);
6. when nothing answered: LLMUnavailable, naming each model and why.

A stream is retried or falls back only until its first token; after that a failure ends it
with LLMUnavailable (the person has already seen part of an answer).

Exceptions for the room (UserError): RateLimited, BudgetExceeded, UnknownModel, LLMUnavailable.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot import strings
from bot.config import Config, LlmConfig
from bot.errors import (
    BudgetExceeded,
    ConfigError,
    LLMUnavailable,
    ProviderError,
    RateLimited,
    UnknownModel,
)
from bot.llm.breaker import CircuitBreaker
from bot.llm.budget import BudgetLimits, Budgets, downgraded_message, refused_message
from bot.llm.pricing import Price, PricedProvider, Pricing
from bot.llm.providers import (
    Completion,
    Provider,
    ProviderCall,
    Timeouts,
    create_provider,
    gated,
)
from bot.llm.ratelimit import RateLimit, RateLimiter, Reservation, Scope, estimate_tokens
from bot.llm.redaction import Redactor, config_secrets
from bot.llm.types import (
    CallContext,
    ChatRequest,
    ChatResult,
    Failure,
    Limits,
    Outcome,
    StreamEvent,
    Usage,
)
from bot.llm.usage import UsageRecord, UsageRecorder, UsageStore
from bot.tasks import BackgroundTasks, outcome_seen

log = logging.getLogger(__name__)

_DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


@dataclass(frozen=True, slots=True)
class ModelRef:
    provider: str
    model: str

    @property
    def ref(self) -> str:
        return f"{self.provider}/{self.model}"

    def __str__(self) -> str:
        return self.ref


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model the configuration names, for `GET /_doryo/v1/llm/models` and `!agent`."""

    ref: str
    provider: str
    kind: str
    local: bool
    roles: tuple[str, ...]
    """default, fallback, downgrade, alias:NAME, priced (from llm.prices)."""
    price: Price | None
    """The llm.prices override (USD per million tokens), if any; otherwise genai-prices."""
    circuit: str
    """closed, open or half_open: the provider's circuit breaker in this process."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (the admin API): prices as strings, USD per million tokens."""
        price = None
        if self.price is not None:
            price = {
                "input": str(self.price.input),
                "output": str(self.price.output),
                "cached_input": None
                if self.price.cached_input is None
                else str(self.price.cached_input),
            }
        return {
            "ref": self.ref,
            "provider": self.provider,
            "kind": self.kind,
            "local": self.local,
            "roles": list(self.roles),
            "price": price,
            "circuit": self.circuit,
        }


@dataclass
class _Plan:
    chain: list[ModelRef]
    notes: list[str]
    gate: asyncio.Future[Reservation | None] | None
    """The rate-limit check, running while the first request is built (providers.gated), or
    already counted from a lease."""
    context: CallContext
    failures: list[Failure] = field(default_factory=list)

    @property
    def reservation(self) -> Reservation | None:
        gate = self.gate
        if gate is None or not gate.done() or gate.cancelled() or gate.exception():
            return None
        return gate.result()


@dataclass
class _Try:
    """One call to one provider: timing and what to record."""

    ref: ModelRef
    started: float
    streamed: bool
    ttft: float | None = None


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def _after(seconds: float) -> str:
    return strings.duration(_ms(seconds))


class LLMRouter:
    def __init__(
        self,
        config: LlmConfig,
        *,
        redis: Redis,
        db: asyncpg.Pool,
        key_prefix: str = "",
        secrets: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.config = config
        self._check_config_refs()  # before any client exists: nothing to close on failure
        timeouts = Timeouts(total=config.timeouts.total, connect=config.timeouts.connect)
        self.providers: dict[str, Provider] = {
            name: create_provider(name, provider, timeouts)
            for name, provider in config.providers.items()
        }
        self.breakers = {
            name: CircuitBreaker(
                config.circuit_breaker.failures, config.circuit_breaker.cooldown, clock
            )
            for name in self.providers
        }
        self.usage = UsageStore(db)
        self.recorder = UsageRecorder(self.usage)
        self.budgets = Budgets(self.usage, config.budgets.refresh_seconds, clock)
        self._background = BackgroundTasks()
        self.ratelimiter = RateLimiter(redis, key_prefix)
        self.pricing = Pricing(config.prices)
        self.redactor = Redactor(
            secrets,
            enabled=config.redaction.enabled,
            emails=config.redaction.emails,
            phone_numbers=config.redaction.phone_numbers,
        )
        self._priced = {
            name: PricedProvider(name, p.base_url, p.local) for name, p in self.providers.items()
        }
        self._parallel = asyncio.Semaphore(config.max_parallel_calls)
        self._sleep = sleep
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

    @classmethod
    def from_config(cls, config: Config, *, redis: Redis, db: asyncpg.Pool) -> LLMRouter:
        """The router for a whole Doryo config: every SecretStr in it is kept out of prompts."""
        return cls(
            config.llm,
            redis=redis,
            db=db,
            key_prefix=config.redis.key_prefix,
            secrets=config_secrets(config),
        )

    def _check_config_refs(self) -> None:
        refs = [(f"llm.fallbacks.{i}", ref) for i, ref in enumerate(self.config.fallbacks)]
        if self.config.budgets.downgrade_model:
            refs.append(("llm.budgets.downgrade_model", self.config.budgets.downgrade_model))
        for key, ref in refs:
            try:
                self.resolve(ref)
            except UnknownModel:
                raise ConfigError(
                    f"{ref!r} is neither an alias of llm.aliases nor a configured provider/model",
                    key=key,
                ) from None

    async def flush(self, timeout: float = 10) -> None:
        """Wait until the bookkeeping of every call so far (usage rows, token counts) is done."""
        async with asyncio.timeout(timeout):
            await self.recorder.flush()
        await self._background.wait(timeout)

    async def close(self) -> None:
        await self._background.wait(5)
        await self.recorder.close()
        for provider in self.providers.values():
            await provider.close()

    # --- models --------------------------------------------------------------------------

    def resolve(self, ref: str | None = None) -> ModelRef:
        """A model reference ("<provider>/<model>" or an alias; None: the default model) as a
        ModelRef. Raises UnknownModel, whose text can go to a room."""
        name = ref or self.config.default_model
        target = self.config.aliases.get(name, name)
        provider, _, model = target.partition("/")
        if not name or provider not in self.config.providers or not model:
            aliases = ", ".join(f"`{a}`" for a in sorted(self.config.aliases))
            raise UnknownModel(
                strings.LLM_UNKNOWN_MODEL.format(
                    ref=name or "(none configured)",
                    providers=", ".join(sorted(self.config.providers)) or "none",
                    aliases=strings.LLM_UNKNOWN_MODEL_ALIASES.format(aliases=aliases)
                    if aliases
                    else "",
                )
            )
        return ModelRef(provider, model)

    def chain(
        self, model: str | None = None, fallbacks: Sequence[str] | None = None
    ) -> list[ModelRef]:
        """The models a call tries, in order, without repeats."""
        refs = [self.resolve(model)]
        for ref in self.config.fallbacks if fallbacks is None else fallbacks:
            resolved = self.resolve(ref)
            if resolved not in refs:
                refs.append(resolved)
        return refs

    def models(self) -> list[ModelInfo]:
        """The models the configuration names, with their roles, local flag and price."""
        roles: dict[str, list[str]] = {}

        def add(ref: str, role: str) -> None:
            try:
                resolved = self.resolve(ref).ref
            except UnknownModel:
                return
            roles.setdefault(resolved, []).append(role)

        if self.config.default_model:
            add(self.config.default_model, "default")
        for ref in self.config.fallbacks:
            add(ref, "fallback")
        if self.config.budgets.downgrade_model:
            add(self.config.budgets.downgrade_model, "downgrade")
        for alias, ref in self.config.aliases.items():
            add(ref, f"alias:{alias}")
        for ref in self.config.prices:
            if not ref.endswith("/*"):
                add(ref, "priced")
        out = []
        for ref, its_roles in roles.items():
            resolved = self.resolve(ref)
            provider = self.providers[resolved.provider]
            out.append(
                ModelInfo(
                    ref=ref,
                    provider=resolved.provider,
                    kind=provider.kind,
                    local=provider.local,
                    roles=tuple(its_roles),
                    price=self.pricing.override(resolved.provider, resolved.model),
                    circuit=self.breakers[resolved.provider].state,
                )
            )
        return out

    async def provider_models(self, timeout: float = 10) -> dict[str, list[str] | str]:
        """What each provider offers (its /models endpoint): a list of names, or the error."""

        async def one(provider: Provider) -> list[str] | str:
            try:
                async with asyncio.timeout(timeout):
                    return sorted(await provider.list_models())
            except ProviderError as e:
                return self.redactor.scrub(str(e))
            except TimeoutError:
                return strings.LLM_REASON_TIMEOUT.format(after=_after(timeout))

        names = list(self.providers)
        results = await asyncio.gather(*(one(self.providers[n]) for n in names))
        return dict(zip(names, results, strict=True))

    # --- limits --------------------------------------------------------------------------

    def _scopes(self, context: CallContext, limits: Limits) -> list[Scope]:
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

    async def _plan(self, request: ChatRequest) -> _Plan:
        chain = self.chain(request.model, request.fallbacks)
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
            chain = [self.resolve(downgrade)]
            notes.append(downgraded_message(reached, chain[0].ref))
        estimate = estimate_tokens(
            sum(
                len(m.content) + sum(len(c.arguments_json) for c in m.tool_calls)
                for m in request.messages
            )
            + sum(len(t.description) + 100 for t in request.tools)
        )
        scopes = self._scopes(context, limits)
        gate: asyncio.Future[Reservation | None] | None = None
        if (leased := self.ratelimiter.leased(scopes, estimate)) is not None:
            # Counted from this process's lease: nothing to wait for.
            gate = asyncio.get_running_loop().create_future()
            gate.set_result(leased)
        elif any(not scope.limit.unlimited for scope in scopes):
            gate = asyncio.ensure_future(self._acquire(scopes, estimate))
            gate.add_done_callback(outcome_seen)  # a cancelled call never waits for it
            # Let the check send its Redis command now: it then runs while the SDK builds the
            # request (CPU work in this task), instead of after it.
            await asyncio.sleep(0)
        return _Plan(chain, notes, gate, context)

    async def _acquire(self, scopes: list[Scope], estimate: int) -> Reservation | None:
        try:
            return await self.ratelimiter.acquire(scopes, estimate)
        except RateLimited:
            log.info("LLM call refused: rate limit reached")
            raise
        except (RedisError, OSError) as e:
            log.error("could not check LLM rate limits, letting the call through: %s", e)
            return None

    # --- calls ---------------------------------------------------------------------------

    def _call(self, request: ChatRequest, ref: ModelRef) -> ProviderCall:
        provider = self.providers[ref.provider]
        return ProviderCall(
            model=ref.model,
            messages=self.redactor.messages(request.messages, external=not provider.local),
            tools=request.tools,
            tool_choice=request.tool_choice,
            temperature=request.temperature,
            max_tokens=request.max_tokens,
        )

    def _backoff(self, attempt: int, error: ProviderError) -> float | None:
        """Seconds to wait before the next try, or None to give up on this provider."""
        retries = self.config.retries
        if error.retry_after is not None:
            return error.retry_after if error.retry_after <= retries.max_retry_after else None
        delay = min(retries.max_backoff, retries.backoff * 2.0**attempt)
        return delay * random.uniform(0.5, 1.0)

    def _reason(self, error: ProviderError, tries: int) -> str:
        """Why a model did not answer, briefly, for the room."""
        reason = error.kind if error.retryable else self.redactor.scrub(str(error))
        if tries > 1:
            reason = strings.LLM_REASON_RETRIES.format(reason=reason, attempts=tries)
        return reason

    def _record(
        self,
        attempt: _Try,
        plan: _Plan,
        outcome: Outcome,
        usage: Usage | None = None,
        error: str | None = None,
    ) -> Decimal | None:
        """Queue the call's usage row (written in the background); returns its cost."""
        ref = attempt.ref
        usage = usage or Usage()
        cost = (
            self.pricing.cost(self._priced[ref.provider], ref.model, usage)
            if outcome == "ok"
            else Decimal(0)
        )
        self.recorder.add(
            UsageRecord(
                provider=ref.provider,
                model=ref.model,
                usage=usage,
                cost_usd=cost,
                latency_ms=_ms(time.monotonic() - attempt.started),
                ttft_ms=_ms(attempt.ttft - attempt.started) if attempt.ttft is not None else None,
                streamed=attempt.streamed,
                context=plan.context,
                outcome=outcome,
                error=self.redactor.scrub(error) if error else None,
            )
        )
        self.budgets.add(plan.context, cost)
        return cost

    def _settle(self, plan: _Plan, tokens: int) -> None:
        """Replace the rate limits' token estimate with what was used, in the background."""
        reservation = plan.reservation
        if reservation is not None and reservation.estimate != tokens:
            self._background.spawn(self.ratelimiter.settle(reservation, tokens), name="llm-settle")

    def _failed(self, attempt: _Try, plan: _Plan, error: ProviderError) -> None:
        breaker = self.breakers[attempt.ref.provider]
        if error.retryable:
            breaker.failure(error.kind)
        else:
            breaker.release()  # the provider answered: it is up, the request was wrong
        outcome: Outcome = (
            "timeout" if error.timeout else "rate_limited" if error.status == 429 else "error"
        )
        message = self.redactor.scrub(str(error))
        log.warning("LLM call to %s failed: %s", attempt.ref, message)
        self._record(attempt, plan, outcome, error=message)

    def _aborted(self, attempt: _Try, plan: _Plan, error: BaseException) -> None:
        """The call ended by cancellation (or a bug): record it, free the breaker's probe."""
        self.breakers[attempt.ref.provider].release()
        cancelled = isinstance(error, (asyncio.CancelledError, GeneratorExit))
        detail = None if cancelled else self.redactor.scrub(f"{type(error).__name__}: {error}")
        self._record(attempt, plan, "cancelled" if cancelled else "error", error=detail)
        self._settle(plan, 0)

    def _result(
        self, attempt: _Try, plan: _Plan, completion: Completion, cost: Decimal | None
    ) -> ChatResult:
        notes = list(plan.notes)
        if plan.failures:
            notes.append(
                strings.LLM_FALLBACK_NOTE.format(
                    failed=", ".join(f.model for f in plan.failures), model=attempt.ref.ref
                )
            )
        return ChatResult(
            text=completion.text,
            tool_calls=completion.tool_calls,
            usage=completion.usage,
            model=attempt.ref.ref,
            provider=attempt.ref.provider,
            finish_reason=completion.finish_reason,
            latency_ms=_ms(time.monotonic() - attempt.started),
            ttft_ms=_ms(attempt.ttft - attempt.started) if attempt.ttft is not None else None,
            cost_usd=cost,
            notes=tuple(notes),
            failures=tuple(plan.failures),
        )

    def _succeeded(self, attempt: _Try, plan: _Plan, completion: Completion) -> ChatResult:
        self.breakers[attempt.ref.provider].success()
        cost = self._record(attempt, plan, "ok", completion.usage)
        self._settle(plan, completion.usage.total_tokens)
        return self._result(attempt, plan, completion, cost)

    async def _give_up(self, plan: _Plan) -> LLMUnavailable:
        if plan.gate is not None:
            await plan.gate  # a rate limit says more than providers that were never called
        self._settle(plan, 0)
        failures = "; ".join(
            strings.LLM_FAILURE.format(model=f.model, reason=f.reason) for f in plan.failures
        )
        log.warning("no model answered: %s", failures)
        return LLMUnavailable(
            strings.LLM_UNAVAILABLE.format(failures=failures),
            [(f.model, f.reason) for f in plan.failures],
        )

    async def _retry(self, plan: _Plan, ref: ModelRef, tries: int, error: ProviderError) -> bool:
        """After a failed try: wait and return True to try the same model again, or note the
        model as failed and return False to move on."""
        if error.retryable and tries <= self.config.retries.attempts:
            delay = self._backoff(tries - 1, error)
            if delay is not None:
                await self._sleep(delay)
                return True
        plan.failures.append(Failure(ref.ref, self._reason(error, tries)))
        return False

    def _allowed(self, plan: _Plan, ref: ModelRef, tries: int) -> bool:
        """May this model be tried (again)? A model skipped before its first try is noted."""
        breaker = self.breakers[ref.provider]
        if breaker.allow():
            return True
        if tries == 0:
            retry = _after(max(1.0, breaker.retry_in()))
            plan.failures.append(Failure(ref.ref, strings.LLM_REASON_SKIPPED.format(retry=retry)))
        # Opened during the retries: _retry noted the last error as the reason.
        return False

    @staticmethod
    def _timeout(message: str) -> ProviderError:
        return ProviderError(message, retryable=True, kind=message, timeout=True)

    async def chat(self, request: ChatRequest) -> ChatResult:
        """One whole answer. Raises RateLimited, BudgetExceeded, UnknownModel, LLMUnavailable
        (all UserError: their text is written for the room)."""
        plan = await self._plan(request)
        total = self.config.timeouts.total
        for ref in plan.chain:
            provider = self.providers[ref.provider]
            call = self._call(request, ref)
            tries = 0
            while self._allowed(plan, ref, tries):
                tries += 1
                attempt = _Try(ref, time.monotonic(), streamed=False)
                try:
                    async with self._parallel:
                        attempt.started = time.monotonic()
                        try:
                            async with asyncio.timeout(total):
                                with gated(plan.gate):
                                    completion = await provider.complete(call)
                        except TimeoutError:
                            raise self._timeout(
                                strings.LLM_REASON_TIMEOUT.format(after=_after(total))
                            ) from None
                except RateLimited:
                    self.breakers[ref.provider].release()  # refused before anything was sent
                    raise
                except ProviderError as e:
                    self._failed(attempt, plan, e)
                    if await self._retry(plan, ref, tries, e):
                        continue
                    break
                except BaseException as e:
                    self._aborted(attempt, plan, e)
                    raise
                return self._succeeded(attempt, plan, completion)
        raise await self._give_up(plan)

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        """Text and tool-call deltas as they come, ending with the ChatResult. Raises like
        `chat`. Close it when stopping early: `async with aclosing(router.stream(r)) as s:`."""
        plan = await self._plan(request)
        timeouts = self.config.timeouts
        first_token = min(timeouts.first_token, timeouts.total)
        loop = asyncio.get_running_loop()
        for ref in plan.chain:
            provider = self.providers[ref.provider]
            call = self._call(request, ref)
            tries = 0
            while self._allowed(plan, ref, tries):
                tries += 1
                attempt = _Try(ref, time.monotonic(), streamed=True)
                completion = Completion("", (), Usage(), None)
                emitted = False
                events = provider.stream(call)
                try:
                    async with self._parallel:
                        attempt.started = time.monotonic()
                        first_deadline = loop.time() + first_token
                        total_deadline = loop.time() + timeouts.total
                        while True:
                            try:
                                async with asyncio.timeout_at(
                                    total_deadline if emitted else first_deadline
                                ):
                                    with gated(plan.gate):
                                        event = await anext(events)
                            except StopAsyncIteration:
                                break
                            except TimeoutError:
                                if emitted or first_token >= timeouts.total:
                                    after = _after(timeouts.total)
                                    raise self._timeout(
                                        strings.LLM_REASON_TIMEOUT.format(after=after)
                                    ) from None
                                after = _after(first_token)
                                raise self._timeout(
                                    strings.LLM_REASON_NO_FIRST_TOKEN.format(after=after)
                                ) from None
                            if isinstance(event, Completion):
                                completion = event
                                continue
                            if not emitted:
                                emitted = True
                                attempt.ttft = time.monotonic()
                            yield event
                except RateLimited:
                    self.breakers[ref.provider].release()  # refused before anything was sent
                    raise
                except ProviderError as e:
                    self._failed(attempt, plan, e)
                    if emitted:
                        # Part of an answer is out already: no retry, no fallback.
                        plan.failures.append(Failure(ref.ref, self._reason(e, tries)))
                        raise await self._give_up(plan) from None
                    if await self._retry(plan, ref, tries, e):
                        continue
                    break
                except BaseException as e:
                    self._aborted(attempt, plan, e)
                    raise
                finally:
                    await events.aclose()
                yield self._succeeded(attempt, plan, completion)
                return
        raise await self._give_up(plan)
