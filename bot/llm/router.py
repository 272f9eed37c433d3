"""LLMRouter: one `chat` and one `stream` over every configured provider.

A call goes:
1. admission (bot.llm.admission): the model chain — the request's model (or llm.default_model),
   then its fallbacks (or llm.fallbacks), aliases resolved (bot.llm.catalog) — and budgets
   (refuse, or switch the chain to the downgrade model, with a note); the rate limits are
   checked while the SDK builds the first request, which waits for the answer before it leaves
   (bot.llm.gate): a refused call sends nothing;
2. each model in turn: skipped while its provider's circuit is open; otherwise tried, and
   retried with backoff on retryable errors (429 honouring retry-after, 5xx, timeouts, hangs);
3. every try is recorded in llm_usage with its tokens, cost, latency and outcome, written in
   the background (UsageRecorder; `flush` waits for it);
4. when nothing answered: LLMUnavailable, naming each model and why.

`chat` and `stream` share one attempt loop: `chat` is a call whose one event is the whole
reply. A stream is retried or falls back only until its first token; after that a failure ends
it with LLMUnavailable (the person has already seen part of an answer).

Exceptions for the room (UserError): RateLimited, BudgetExceeded, UnknownModel, LLMUnavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal

import asyncpg
from redis.asyncio import Redis

from bot.core import strings
from bot.core.config import Config, LlmConfig
from bot.core.errors import LLMUnavailable, ProviderError, RateLimited
from bot.llm.admission import Admission, Admitted
from bot.llm.breaker import CircuitBreaker
from bot.llm.catalog import ModelCatalog, ModelInfo, ModelRef
from bot.llm.gate import ProviderGate
from bot.llm.pricing import PricedProvider, Pricing
from bot.llm.providers import Completion, Provider, ProviderCall, Timeouts, create_provider
from bot.llm.redaction import Redactor, config_secrets
from bot.llm.types import ChatRequest, ChatResult, Failure, Outcome, StreamEvent, Usage
from bot.llm.usage import UsageRecord, UsageRecorder, UsageStore

log = logging.getLogger(__name__)


@dataclass
class _Plan:
    """One call: what admission let through, and the models that failed so far."""

    admitted: Admitted
    failures: list[Failure] = field(default_factory=list)


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
        self.catalog = ModelCatalog(config)  # checks the refs before any client exists
        timeouts = Timeouts(total=config.timeouts.total, connect=config.timeouts.connect)
        self.gate = ProviderGate()
        self.providers: dict[str, Provider] = {
            name: create_provider(name, provider, timeouts, self.gate)
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
        self.admission = Admission(
            config, self.catalog, usage=self.usage, redis=redis, key_prefix=key_prefix, clock=clock
        )
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

    async def flush(self, timeout: float = 10) -> None:
        """Wait until the bookkeeping of every call so far (usage rows, token counts) is done."""
        async with asyncio.timeout(timeout):
            await self.recorder.flush()
        await self.admission.wait(timeout)

    async def close(self) -> None:
        await self.admission.wait(5)
        await self.recorder.close()
        for provider in self.providers.values():
            await provider.close()

    def models(self) -> list[ModelInfo]:
        """The models the configuration names, with their roles, local flag and price."""
        out = []
        for ref, roles in self.catalog.roles().items():
            provider = self.providers[ref.provider]
            out.append(
                ModelInfo(
                    ref=ref.ref,
                    provider=ref.provider,
                    kind=provider.kind,
                    local=provider.local,
                    roles=roles,
                    price=self.pricing.override(ref.provider, ref.model),
                    circuit=self.breakers[ref.provider].state,
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

    def record(self, record: UsageRecord) -> None:
        """A model call made elsewhere (a Letta agent's turn): in llm_usage like the router's
        own, and counted against its budgets."""
        self.recorder.add(record)
        self.admission.spend(record.context, record.cost_usd)

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
        self.record(
            UsageRecord(
                provider=ref.provider,
                model=ref.model,
                usage=usage,
                cost_usd=cost,
                latency_ms=_ms(time.monotonic() - attempt.started),
                ttft_ms=_ms(attempt.ttft - attempt.started) if attempt.ttft is not None else None,
                streamed=attempt.streamed,
                context=plan.admitted.context,
                outcome=outcome,
                error=self.redactor.scrub(error) if error else None,
            )
        )
        return cost

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
        self.admission.settle(plan.admitted, 0)

    def _result(
        self, attempt: _Try, plan: _Plan, completion: Completion, cost: Decimal | None
    ) -> ChatResult:
        notes = list(plan.admitted.notes)
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
        self.admission.settle(plan.admitted, completion.usage.total_tokens)
        return self._result(attempt, plan, completion, cost)

    async def _give_up(self, plan: _Plan) -> LLMUnavailable:
        if plan.admitted.check is not None:
            await plan.admitted.check  # a rate limit says more than providers never called
        self.admission.settle(plan.admitted, 0)
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
        async with contextlib.aclosing(self._calls(request, streamed=False)) as events:
            async for event in events:
                if isinstance(event, ChatResult):
                    return event
        raise AssertionError("a call ends with its result or raises")  # pragma: no cover

    def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        """Text and tool-call deltas as they come, ending with the ChatResult. Raises like
        `chat`. Close it when stopping early: `async with aclosing(router.stream(r)) as s:`."""
        return self._calls(request, streamed=True)

    async def _calls(
        self, request: ChatRequest, *, streamed: bool
    ) -> AsyncGenerator[StreamEvent, None]:
        """The attempt loop of `chat` and `stream`: each model of the chain in turn, each tried
        and retried while its breaker and the retry rules allow; the ChatResult last. Not
        streamed, a try's one event is the whole reply, under the total timeout."""
        plan = _Plan(await self.admission.admit(request))
        timeouts = self.config.timeouts
        first_token = min(timeouts.first_token, timeouts.total) if streamed else timeouts.total
        loop = asyncio.get_running_loop()
        for ref in plan.admitted.chain:
            provider = self.providers[ref.provider]
            call = self._call(request, ref)
            tries = 0
            while self._allowed(plan, ref, tries):
                tries += 1
                attempt = _Try(ref, time.monotonic(), streamed=streamed)
                completion = Completion("", (), Usage(), None)
                emitted = False
                events = provider.stream(call) if streamed else _whole(provider, call)
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
                                    with self.gate.held(plan.admitted.check):
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


async def _whole(provider: Provider, call: ProviderCall) -> AsyncGenerator[Completion, None]:
    """A call not streamed, as a stream of one event: the whole reply."""
    yield await provider.complete(call)
