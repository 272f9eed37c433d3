"""Rate limits on the real Redis (shared by several routers, as by several processes) and
budgets from the real usage table; costs and usage summaries."""

from __future__ import annotations

import asyncio
import json
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest
from redis.asyncio import Redis

from bot.core.errors import BudgetExceeded, RateLimited
from bot.llm import CallContext, ChatRequest, Limits, Message
from bot.llm.ratelimit import RateLimit, RateLimiter, Scope
from bot.llm.usage import month_start
from tests.conftest import minute_to_spare
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.llm_script import Answer, Error, Tokens
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.llm_fixtures import *  # noqa: F403
from tests.integration.llm_fixtures import Clock, RouterFactory


def ask(
    *,
    workspace: str | None = "ws1",
    agent: str | None = "assistant",
    user: str | None = "@alice:hs",
    limits: Limits | None = None,
    model: str | None = None,
) -> ChatRequest:
    return ChatRequest(
        messages=[Message.user("hello")],
        model=model,
        context=CallContext(agent=agent, workspace_id=workspace, user_id=user, room_id="!r:hs"),
        limits=limits,
    )


# --- rate limits -----------------------------------------------------------------------------


async def test_user_requests_per_minute_refuse_before_calling_the_provider(
    make_router: RouterFactory, fake_openai: FakeOpenAI, llm_pool: asyncpg.Pool, redis_url: str
) -> None:
    await minute_to_spare(redis_url, seconds=5)
    fake_openai.default = Answer("ok")
    router = make_router(rate_limits={"user": {"requests_per_minute": 2}})
    await router.chat(ask())
    await router.chat(ask())
    with pytest.raises(RateLimited) as caught:
        await router.chat(ask())
    error = caught.value
    assert (error.scope, error.limit) == ("user", "requests")
    assert 0 < error.reset_after <= 60
    assert str(error).startswith("Your limit of 2 requests a minute to the model is reached; ")
    assert "resets in" in str(error)
    assert len(fake_openai.requests) == 2  # nothing sent for the refused call
    await router.flush()
    assert await llm_pool.fetchval("SELECT count(*) FROM llm_usage") == 2
    # Another user is not affected.
    await router.chat(ask(user="@bob:hs"))


async def test_a_refused_call_never_leaves_for_anthropic_either(
    make_router: RouterFactory, fake_anthropic: FakeAnthropic, redis_url: str
) -> None:
    """The check runs while the SDK builds the request; the request waits for it at the HTTP
    client's request hook, and a refusal comes out as RateLimited (not a provider error)."""
    await minute_to_spare(redis_url, seconds=5)
    fake_anthropic.default = Answer("ok")
    router = make_router(
        default_model="claude/c", rate_limits={"agent": {"requests_per_minute": 1}}
    )
    await router.chat(ask())
    with pytest.raises(RateLimited, match="This agent's limit of 1 requests"):
        await router.chat(ask())
    with pytest.raises(RateLimited):
        async with aclosing(router.stream(ask())) as stream:
            async for _ in stream:
                pass
    assert len(fake_anthropic.requests) == 1
    assert router.breakers["claude"].state == "closed"
    await router.flush()
    assert len(await router.usage.recent()) == 1  # refused calls leave no usage row


async def test_without_redis_calls_go_through(
    make_router: RouterFactory, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    try:
        fake_openai.script(Answer("still here"))
        router = make_router(redis=dead, rate_limits={"user": {"requests_per_minute": 1}})
        assert (await router.chat(ask())).text == "still here"
        assert "could not check LLM rate limits" in caplog.text
    finally:
        await dead.aclose()


async def test_two_routers_share_one_workspace_limit(
    make_router: RouterFactory, fake_openai: FakeOpenAI, redis_url: str
) -> None:
    await minute_to_spare(redis_url, seconds=5)
    fake_openai.default = Answer("ok")
    other_redis = Redis.from_url(redis_url)  # a second process would have its own connection
    try:
        first = make_router(rate_limits={"workspace": {"requests_per_minute": 3}})
        second = make_router(
            redis=other_redis, rate_limits={"workspace": {"requests_per_minute": 3}}
        )
        await first.chat(ask(user="@a:hs"))
        await second.chat(ask(user="@b:hs"))
        await first.chat(ask(user="@c:hs"))
        for router in (second, first):
            with pytest.raises(RateLimited, match="This workspace's limit of 3 requests"):
                await router.chat(ask(user="@d:hs"))
        # Another workspace has its own count.
        await second.chat(ask(workspace="ws2"))
    finally:
        await other_redis.aclose()


async def mid_minute(redis: Redis) -> Clock:
    """A clock for rate limiters, at the middle of the Redis server's current minute and moved
    by hand: no test waits for a minute to turn, nor fails when one turns."""
    clock = Clock()
    seconds, _ = await redis.time()
    clock.now = seconds // 60 * 60 + 30.0
    return clock


async def race(
    llm_redis: Redis, redis_url: str, prefix: str, scope: Scope, calls: int
) -> tuple[int, int]:
    """`calls` concurrent acquires from two limiters on two connections, as two processes
    would make them. Returns how many got through, and the requests Redis counted."""
    other = Redis.from_url(redis_url)
    try:
        clock = await mid_minute(llm_redis)
        limiters = [RateLimiter(r, prefix, clock=clock) for r in (llm_redis, other)]

        async def one(i: int) -> bool:
            try:
                await limiters[i % 2].acquire([scope], estimate=1)
            except RateLimited:
                return False
            return True

        results = await asyncio.gather(*(one(i) for i in range(calls)))
        return sum(results), (await limiters[0].usage(scope))[0]
    finally:
        await other.aclose()


async def test_concurrent_acquires_from_two_limiters_are_exact(
    llm_redis: Redis, redis_url: str
) -> None:
    scope = Scope("workspace", "ws-race", RateLimit(requests_per_minute=7))
    assert await race(llm_redis, redis_url, "conc:", scope, 40) == (7, 7)


async def evalsha_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_a_busy_process_leases_room_ahead_and_asks_redis_rarely(llm_redis: Redis) -> None:
    limiter = RateLimiter(llm_redis, "lease:", clock=await mid_minute(llm_redis))
    scope = Scope("agent", "busy", RateLimit(requests_per_minute=1000, tokens_per_minute=10**7))
    before = await evalsha_calls(llm_redis)
    for _ in range(100):
        await limiter.acquire([scope], estimate=50)
    trips = await evalsha_calls(llm_redis) - before
    # Leases of 1, 1, 2, 4, 8, then 16 requests (1/20 of 1000 is 50; 16 is the most): 11
    # trips, and one more when Redis first learns the script.
    assert trips <= 12, trips
    requests, tokens = await limiter.usage(scope)
    assert 100 <= requests < 100 + 16 and tokens == 50 * requests


async def test_a_new_minute_counts_afresh_and_a_lease_ends_with_its_minute(
    llm_redis: Redis,
) -> None:
    clock = await mid_minute(llm_redis)
    limiter = RateLimiter(llm_redis, "minute:", clock=clock)
    scope = Scope("user", "u", RateLimit(requests_per_minute=3))
    for _ in range(3):
        await limiter.acquire([scope], estimate=1)
    with pytest.raises(RateLimited) as refused:
        await limiter.acquire([scope], estimate=1)
    assert refused.value.reset_after == 30  # the middle of the minute
    clock.now += 29.9
    with pytest.raises(RateLimited):
        await limiter.acquire([scope], estimate=1)
    clock.now += 0.2  # the next minute
    await limiter.acquire([scope], estimate=1)
    assert await limiter.usage(scope) == (1, 1)  # a request and its estimate, this minute
    # A busy process's lease is not spent in the next minute: what it took there is gone.
    busy = Scope("agent", "busy", RateLimit(requests_per_minute=1000))
    for _ in range(20):
        await limiter.acquire([busy], estimate=1)
    leased, _ = await limiter.usage(busy)
    assert leased > 20
    clock.now += 60
    assert limiter.leased([busy], 1) is None
    await limiter.acquire([busy], estimate=1)
    assert (await limiter.usage(busy))[0] <= 16


async def test_leases_of_two_processes_never_pass_the_limit(
    llm_redis: Redis, redis_url: str
) -> None:
    scope = Scope("workspace", "shared", RateLimit(requests_per_minute=100))
    granted, counted = await race(llm_redis, redis_url, "lease2:", scope, 300)
    assert counted == 100  # all leased, never more
    # Refused at most what the other process leased and had not used yet (a lease of this
    # limit holds at most 5 requests).
    assert 100 - 2 * 5 <= granted <= 100


async def test_tokens_per_minute_count_what_the_provider_reported(
    make_router: RouterFactory, fake_openai: FakeOpenAI, redis_url: str
) -> None:
    await minute_to_spare(redis_url, seconds=5)
    fake_openai.script(Answer("long", usage=Tokens(900, 200)), Answer("never"))
    router = make_router(rate_limits={"agent": {"tokens_per_minute": 1000}})
    await router.chat(ask())
    await router.flush()
    scope = router.admission.scopes(ask().context, router.admission.default_limits)[0]
    assert await router.admission.ratelimiter.usage(scope) == (
        1,
        1100,
    )  # the estimate was replaced
    with pytest.raises(RateLimited) as caught:
        await router.chat(ask())
    assert (caught.value.scope, caught.value.limit) == ("agent", "tokens")
    assert "This agent's limit of 1,000 tokens a minute" in str(caught.value)
    assert len(fake_openai.requests) == 1
    # The same agent in another workspace counts on its own.
    fake_openai.script(Answer("other workspace"))
    await router.chat(ask(workspace="ws2"))


async def test_failed_calls_give_their_token_reservation_back(
    make_router: RouterFactory, fake_openai: FakeOpenAI, redis_url: str
) -> None:
    await minute_to_spare(redis_url, seconds=5)
    fake_openai.script(Error(400, "bad"))
    router = make_router(
        rate_limits={"user": {"requests_per_minute": 10, "tokens_per_minute": 10**6}}
    )
    with pytest.raises(Exception, match="No model answered"):
        await router.chat(ask())
    await router.flush()
    scope = router.admission.scopes(ask().context, router.admission.default_limits)[-1]
    assert await router.admission.ratelimiter.usage(scope) == (1, 0)


async def test_workspace_settings_override_the_configured_limits(
    make_router: RouterFactory, fake_openai: FakeOpenAI, redis_url: str
) -> None:
    await minute_to_spare(redis_url, seconds=5)
    fake_openai.default = Answer("ok")
    router = make_router(rate_limits={"workspace": {"requests_per_minute": 100}})
    strict = Limits(workspace_requests_per_minute=1)
    await router.chat(ask(limits=strict))
    with pytest.raises(RateLimited, match="limit of 1 requests"):
        await router.chat(ask(limits=strict))
    # 0 lifts the limit for this workspace.
    unlimited = Limits(workspace_requests_per_minute=0)
    for _ in range(3):
        await router.chat(ask(limits=unlimited))


# --- costs and usage -------------------------------------------------------------------------


async def test_costs_come_from_genai_prices_and_config_overrides(
    make_router: RouterFactory,
    fake_openai: FakeOpenAI,
    fake_anthropic: FakeAnthropic,
    llm_pool: asyncpg.Pool,
) -> None:
    fake_openai.script(Answer("a", usage=Tokens(1_000_000, 1_000_000)))
    fake_anthropic.script(
        Answer("b", usage=Tokens(2000, 1000)),  # genai-prices: haiku 4.5 is $1 / $5 per M
        Answer("c", usage=Tokens(2000, 1000)),  # overridden in config
        Answer("d", usage=Tokens(2000, 1000)),  # unknown model: no cost
    )
    router = make_router(
        prices={
            "local/llama3.1": {"input": "0.10", "output": "0.20"},
            "claude/claude-custom": {"input": 1, "output": 2, "cached_input": "0.1"},
        }
    )
    local = await router.chat(ask())  # local, but priced in config
    assert local.cost_usd == Decimal("0.30")
    haiku = await router.chat(ask(model="claude/claude-haiku-4-5"))
    assert haiku.cost_usd == Decimal("0.007")  # 2000 × $1/M + 1000 × $5/M
    custom = await router.chat(ask(model="claude/claude-custom"))
    assert custom.cost_usd == Decimal("0.004")
    unknown = await router.chat(ask(model="claude/not-a-real-model"))
    assert unknown.cost_usd is None
    await router.flush()
    costs = await llm_pool.fetch("SELECT model, cost_usd FROM llm_usage ORDER BY id")
    assert [(r["model"], r["cost_usd"]) for r in costs] == [
        ("llama3.1", Decimal("0.30")),
        ("claude-haiku-4-5", Decimal("0.007")),
        ("claude-custom", Decimal("0.004")),
        ("not-a-real-model", None),
    ]


async def test_usage_summary_per_agent_and_model(
    make_router: RouterFactory,
    fake_openai: FakeOpenAI,
    fake_anthropic: FakeAnthropic,
    llm_pool: asyncpg.Pool,
) -> None:
    fake_openai.script(
        Answer("1", usage=Tokens(10, 5)),
        Answer("2", usage=Tokens(20, 5)),
        Error(400, "bad"),
        Answer("3", usage=Tokens(7, 1)),
        Answer("5"),
    )
    fake_anthropic.script(Answer("4", usage=Tokens(1000, 100)))
    router = make_router()
    await router.chat(ask())
    await router.chat(ask())
    with pytest.raises(Exception, match="No model answered"):
        await router.chat(ask())
    await router.chat(ask(agent="planner"))
    await router.chat(ask(model="claude/claude-haiku-4-5"))
    await router.chat(ask(workspace="ws2"))  # another workspace: not in ws1's summary
    await router.flush()
    # An old call, outside the window.
    await llm_pool.execute(
        """
        INSERT INTO llm_usage (created_at, provider, model, input_tokens, latency_ms, streamed,
                               agent, workspace_id, outcome)
        VALUES (now() - interval '8 days', 'local', 'llama3.1', 999, 1, false, 'assistant',
                'ws1', 'ok')
        """
    )
    summary = await router.usage.summary(days=7, workspace_id="ws1")
    by_key = {(s.agent, s.model): s for s in summary}
    assistant = by_key[("assistant", "local/llama3.1")]
    assert (assistant.calls, assistant.failures) == (3, 1)
    assert (assistant.input_tokens, assistant.output_tokens) == (30, 10)
    assert assistant.cost_usd == 0 and assistant.unpriced_calls == 0
    assert by_key[("planner", "local/llama3.1")].calls == 1
    haiku = by_key[("assistant", "claude/claude-haiku-4-5")]
    assert haiku.cost_usd == Decimal("0.0015") and summary[0] is haiku  # most expensive first
    assert len(summary) == 3
    month = await router.usage.summary(days=30, workspace_id="ws1")
    assert by_key.keys() == {(s.agent, s.model) for s in month}
    assert haiku.as_dict()["cost_usd"] == "0.0015000000"
    assert json.dumps([s.as_dict() for s in summary])  # the admin API's answer
    everywhere = await router.usage.summary(days=7)
    assert sum(s.calls for s in everywhere) == 6


# --- budgets ---------------------------------------------------------------------------------


async def spend(
    pool: asyncpg.Pool, usd: str, *, agent: str = "assistant", when: str = "now()"
) -> None:
    await pool.execute(
        f"""
        INSERT INTO llm_usage (created_at, provider, model, cost_usd, latency_ms, streamed, agent,
                               workspace_id, outcome)
        VALUES ({when}, 'claude', 'claude-haiku-4-5', $1, 100, false, $2, 'ws1', 'ok')
        """,
        Decimal(usd),
        agent,
    )


async def test_a_spent_workspace_budget_refuses_and_says_until_when(
    make_router: RouterFactory, fake_openai: FakeOpenAI, llm_pool: asyncpg.Pool
) -> None:
    fake_openai.default = Answer("ok")
    router = make_router(budgets={"workspace_monthly_usd": 5})
    await spend(llm_pool, "4.99")
    await spend(llm_pool, "100", when="now() - interval '40 days'")  # an earlier month
    await router.chat(ask())  # 4.99 < 5: still allowed
    await spend(llm_pool, "0.02")
    with pytest.raises(BudgetExceeded) as caught:
        await router.chat(ask())
    resets = month_start() + timedelta(days=32)
    assert str(caught.value) == (
        "This workspace's monthly model budget of $5.00 is spent ($5.01 so far this month). "
        f"It resets on 1 {resets:%B}."
    )
    assert caught.value.scope == "workspace"
    assert len(fake_openai.requests) == 1
    # Another workspace has its own budget.
    await router.chat(ask(workspace="ws2"))


async def test_an_agent_budget_counts_that_agent_only(
    make_router: RouterFactory, fake_openai: FakeOpenAI, llm_pool: asyncpg.Pool
) -> None:
    fake_openai.default = Answer("ok")
    router = make_router()
    await spend(llm_pool, "3", agent="researcher")
    limits = Limits(agent_monthly_usd=Decimal(2))  # as a blueprint would set it
    with pytest.raises(BudgetExceeded, match="This agent's monthly model budget of \\$2.00"):
        await router.chat(ask(agent="researcher", limits=limits))
    await router.chat(ask(agent="assistant", limits=limits))


async def test_a_spent_budget_switches_to_the_cheaper_model_and_says_so(
    make_router: RouterFactory,
    fake_openai: FakeOpenAI,
    fake_anthropic: FakeAnthropic,
    llm_pool: asyncpg.Pool,
) -> None:
    fake_openai.script(Answer("cheap answer"))
    router = make_router(
        default_model="claude/claude-haiku-4-5",
        aliases={"cheap": "local/llama3.1"},
        budgets={
            "workspace_monthly_usd": 1,
            "at_limit": "downgrade",
            "downgrade_model": "cheap",
        },
    )
    await spend(llm_pool, "1.50")
    result = await router.chat(ask())
    assert result.text == "cheap answer" and result.model == "local/llama3.1"
    assert fake_anthropic.requests == []
    resets = month_start() + timedelta(days=32)
    assert result.notes == (
        "This workspace's monthly model budget of $1.00 is spent, so the cheaper "
        f"local/llama3.1 answered instead until it resets on 1 {resets:%B}.",
    )
    # A workspace setting can say refuse instead.
    with pytest.raises(BudgetExceeded):
        await router.chat(ask(limits=Limits(at_limit="refuse")))


async def test_each_process_counts_its_own_spend_at_once_and_rereads_the_rest(
    make_router: RouterFactory, fake_anthropic: FakeAnthropic, llm_pool: asyncpg.Pool
) -> None:
    fake_anthropic.default = Answer("ok", usage=Tokens(1_000_000, 0))  # $1 each (haiku 4.5)
    clock = Clock()
    budgets = {"workspace_monthly_usd": "2.5", "refresh_seconds": 5}
    router = make_router(default_model="claude/claude-haiku-4-5", clock=clock, budgets=budgets)
    await router.chat(ask())
    await router.chat(ask())
    await router.chat(ask())  # $2 spent: still under
    with pytest.raises(BudgetExceeded):  # $3: counted without reading the table again
        await router.chat(ask())
    # A second process, with a bigger budget (its config), sees others' spend on a re-read.
    other = make_router(
        default_model="claude/claude-haiku-4-5",
        clock=clock,
        budgets={"workspace_monthly_usd": 100, "refresh_seconds": 5},
    )
    await other.chat(ask())  # reads ws1's spend: $4
    await spend(llm_pool, "200", agent="assistant")  # another process spends in ws1 meanwhile
    clock.advance(4.9)
    await other.chat(ask())  # not seen until it re-reads...
    clock.advance(0.1)
    with pytest.raises(BudgetExceeded):  # ...refresh_seconds later
        await other.chat(ask())


async def test_month_start_is_utc_calendar() -> None:
    assert month_start(datetime(2026, 3, 31, 23, 59, tzinfo=UTC)) == datetime(
        2026, 3, 1, tzinfo=UTC
    )
