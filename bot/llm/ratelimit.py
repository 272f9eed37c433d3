"""Requests and tokens per minute, per agent, per workspace and per user, counted in Redis.

One Lua script checks every scope and, only if all have room, counts the request in all of them:
atomic, so several Doryo processes share the limits exactly. Windows are fixed minutes of the
Redis server's clock (TIME), so every process agrees on when a window resets.

Tokens are not known before the call: the script reserves an estimate of the prompt's tokens,
and `settle` replaces it with the real count once the provider answered (or 0 if it failed). A
scope whose window already holds tokens refuses a request whose estimate would go past the limit;
an empty window lets any one request through, so a large prompt is never refused forever.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot import strings
from bot.errors import RateLimited

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60

# KEYS: per scope, the request counter's and the token counter's key (without the window).
# ARGV: the token estimate, then per scope: requests per minute, tokens per minute (0: none).
# Returns {0, window} when counted, or {scope number, "requests"|"tokens", ms to reset}.
_ACQUIRE = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local window = math.floor(t / 60)
local reset_ms = math.ceil(((window + 1) * 60 - t) * 1000)
local estimate = tonumber(ARGV[1])
local scopes = #KEYS / 2
for i = 1, scopes do
  local rpm = tonumber(ARGV[2 * i])
  local tpm = tonumber(ARGV[2 * i + 1])
  if rpm > 0 then
    local used = tonumber(redis.call('GET', KEYS[2 * i - 1] .. ':' .. window) or '0')
    if used + 1 > rpm then return {i, 'requests', reset_ms} end
  end
  if tpm > 0 then
    local used = tonumber(redis.call('GET', KEYS[2 * i] .. ':' .. window) or '0')
    if used > 0 and used + estimate > tpm then return {i, 'tokens', reset_ms} end
  end
end
for i = 1, scopes do
  local requests = KEYS[2 * i - 1] .. ':' .. window
  local tokens = KEYS[2 * i] .. ':' .. window
  redis.call('INCR', requests)
  redis.call('EXPIRE', requests, 120)
  redis.call('INCRBY', tokens, estimate)
  redis.call('EXPIRE', tokens, 120)
end
return {0, window}
"""

# KEYS: the token counters' keys (with the window); ARGV[1]: tokens to add (may be negative).
# Counters that expired meanwhile are left alone.
_SETTLE = """
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('INCRBY', KEYS[i], ARGV[1]) end
end
return 0
"""


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Per minute; 0 = no limit."""

    requests_per_minute: int = 0
    tokens_per_minute: int = 0

    @property
    def unlimited(self) -> bool:
        return self.requests_per_minute <= 0 and self.tokens_per_minute <= 0


@dataclass(frozen=True, slots=True)
class Scope:
    """One counter: `kind` is agent, workspace or user; `key` identifies it (opaque)."""

    kind: str
    key: str
    limit: RateLimit


@dataclass(frozen=True, slots=True)
class Reservation:
    """What `acquire` counted, for `settle`."""

    scopes: tuple[Scope, ...]
    window: int
    estimate: int


class RateLimiter:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._script = redis.register_script(_ACQUIRE)
        self._settle = redis.register_script(_SETTLE)

    def _keys(self, scope: Scope) -> tuple[str, str]:
        base = f"{self._prefix}llm:rl:{scope.kind}:{scope.key}"
        return f"{base}:req", f"{base}:tok"

    async def acquire(self, scopes: Sequence[Scope], estimate: int) -> Reservation | None:
        """Count one request (and `estimate` tokens) in every scope, or raise RateLimited
        naming the first scope that is full. None when no scope has a limit."""
        active = tuple(s for s in scopes if not s.limit.unlimited)
        if not active:
            return None
        keys: list[str] = []
        args: list[int] = [max(0, estimate)]
        for scope in active:
            keys.extend(self._keys(scope))
            args += [scope.limit.requests_per_minute, scope.limit.tokens_per_minute]
        result = await self._script(keys=keys, args=args)
        if int(result[0]) == 0:
            return Reservation(active, int(result[1]), max(0, estimate))
        scope = active[int(result[0]) - 1]
        limit = result[1].decode() if isinstance(result[1], bytes) else str(result[1])
        reset_after = int(result[2]) / 1000
        raise RateLimited(
            rate_limited_message(scope, limit, reset_after),
            scope=scope.kind,
            limit=limit,
            reset_after=reset_after,
        )

    async def settle(self, reservation: Reservation | None, tokens: int) -> None:
        """Replace the reserved estimate with the tokens really used. Best effort: a lost
        update only makes the current minute's count a little off."""
        if reservation is None or tokens == reservation.estimate:
            return
        keys = [
            f"{self._keys(scope)[1]}:{reservation.window}"
            for scope in reservation.scopes
            if scope.limit.tokens_per_minute > 0
        ]
        if not keys:
            return
        try:
            await self._settle(keys=keys, args=[tokens - reservation.estimate])
        except (RedisError, OSError) as e:
            log.warning("could not settle LLM token counts: %s", e)

    async def usage(self, scope: Scope) -> tuple[int, int]:
        """Requests and tokens counted in the current window of one scope (for tests, status)."""
        seconds, _ = await self._redis.time()
        window = int(seconds) // WINDOW_SECONDS
        req_key, tok_key = self._keys(scope)
        requests, tokens = await self._redis.mget(f"{req_key}:{window}", f"{tok_key}:{window}")
        return int(requests or 0), int(tokens or 0)


def rate_limited_message(scope: Scope, limit: str, reset_after: float) -> str:
    amount = (
        scope.limit.requests_per_minute if limit == "requests" else scope.limit.tokens_per_minute
    )
    return strings.LLM_RATE_LIMITED.format(
        scope=strings.LLM_SCOPES.get(scope.kind, scope.kind),
        amount=f"{amount:,}",
        unit=strings.LLM_RATE_UNITS.get(limit, limit),
        reset=strings.duration(max(1000, int(reset_after * 1000))),
    )


def estimate_tokens(text_length: int) -> int:
    """A prompt's tokens, roughly: four characters a token."""
    return max(1, text_length // 4)
