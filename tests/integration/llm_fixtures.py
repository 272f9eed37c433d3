"""Fixtures for the LLM router tests: the fake providers, a migrated database pool, Redis, and a
router factory. Test modules take them with `from tests.integration.llm_fixtures import *`.

`make_router(**llm)` builds an LLMRouter over two providers — `local` (kind openai, the
FakeOpenAI) and `claude` (kind anthropic, the FakeAnthropic) — with fast retries and timeouts;
keyword arguments override keys of the `llm:` section (nested dicts are merged).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from bot.core import db
from bot.core.config import LlmConfig
from bot.llm import LLMRouter
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI

__all__ = [
    "Clock",
    "RouterFactory",
    "fake_anthropic",
    "fake_openai",
    "llm_config",
    "llm_pool",
    "llm_redis",
    "make_router",
]

RouterFactory = Callable[..., LLMRouter]


class Clock:
    """A monotonic clock the test moves (circuit breakers, budget re-reads)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def fake_anthropic() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as server:
        yield server


@pytest.fixture
async def llm_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.connect(database_url, min_size=1, max_size=5)
    yield pool
    await pool.close()


@pytest.fixture
async def llm_redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, socket_timeout=5)
    yield client
    await client.aclose()


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture
def llm_config(fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic) -> Callable[..., LlmConfig]:
    def build(**overrides: Any) -> LlmConfig:
        base: dict[str, Any] = {
            "providers": {
                "local": {"kind": "openai", "base_url": fake_openai.base_url, "api_key": ""},
                "claude": {
                    "kind": "anthropic",
                    "base_url": fake_anthropic.base_url,
                    "api_key": "sk-ant-test-key-123",
                    # on 127.0.0.1, but standing in for a cloud provider: priced, redacted
                    "local": False,
                },
            },
            "default_model": "local/llama3.1",
            "fallbacks": [],
            "timeouts": {"total": 5, "first_token": 2, "connect": 1},
            "retries": {"attempts": 2, "backoff": 0.01, "max_backoff": 0.05, "max_retry_after": 2},
            "circuit_breaker": {"failures": 5, "cooldown": 30},
            # Re-read the month's spend at every call: tests write usage rows with SQL too.
            "budgets": {"refresh_seconds": 0},
            "rate_limits": {
                scope: {"requests_per_minute": 0, "tokens_per_minute": 0}
                for scope in ("agent", "workspace", "user")
            },
        }
        return LlmConfig.model_validate(_merge(base, overrides))

    return build


@pytest.fixture
async def make_router(
    llm_config: Callable[..., LlmConfig], llm_pool: asyncpg.Pool, llm_redis: Redis
) -> AsyncIterator[RouterFactory]:
    routers: list[LLMRouter] = []
    prefix = f"t{uuid.uuid4().hex[:8]}:"

    def build(
        *,
        key_prefix: str | None = None,
        redis: Redis | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        **llm: Any,
    ) -> LLMRouter:
        router = LLMRouter(
            llm_config(**llm),
            redis=redis or llm_redis,
            db=llm_pool,
            key_prefix=key_prefix or prefix,
            secrets=["sk-ant-test-key-123", "as-token-very-secret"],
            sleep=sleep,
            clock=clock,
        )
        routers.append(router)
        return router

    yield build
    for router in routers:
        await router.close()
