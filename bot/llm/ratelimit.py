"""Requests and tokens per minute, per agent, per workspace and per user, counted in Redis.

One Lua script checks every scope and, only if all have room, counts the request in all of them:
atomic, so several Doryo processes share the limits exactly. Windows are fixed minutes of the
Redis server's clock (TIME), so every process agrees on when a window resets. (A limiter made
with a `clock` counts by that clock instead, for its leases too: tests turn a minute without
waiting one.)

Tokens are not known before the call: the script reserves an estimate of the prompt's tokens,
and `settle` replaces it with the real count once the provider answered (or 0 if it failed). A
scope whose window already holds tokens refuses a request whose estimate would go past the limit;
an empty window lets any one request through, so a large prompt is never refused forever.

Leases: a process that keeps calling takes room for several requests at once (and their tokens,
at this request's estimate) and spends it without asking Redis again, so most calls of a busy
process cost no round trip. Redis counts what was leased, so the processes together still never
pass a limit. A lease is small next to its limit (at most 1/20 of it, and 16 requests; a limit
under 40 requests a minute is never leased ahead: every request is counted as it comes), it
starts at one request and doubles while it is used up, and what a process leased but did not use
by the end of the minute is lost with the minute: another process may be refused that much early.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.core import strings
from bot.core.errors import RateLimited

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60
LEASE_SHARE = 20
LEASE_MAX = 16
# A lease is not spent this close to the end of its window (clocks, the time a call takes),
# nor in the last half of what is left of it.
LEASE_MARGIN = 0.25

# KEYS: per scope, the request counter's and the token counter's key (without the window).
# ARGV: the token estimate, the time in seconds ("": the server's clock), then per scope:
# requests per minute, tokens per minute (0: none), and the requests to lease. A scope grants
# fewer than asked when it has less room (at least one, or it refuses), and tokens for the
# requests it grants (at least the estimate).
# Returns {0, window, ms to reset, then per scope: requests, tokens leased} when counted, or
# {scope number, "requests"|"tokens", ms to reset}.
_ACQUIRE = """
local t = tonumber(ARGV[2])
if t == nil then
  local now = redis.call('TIME')
  t = tonumber(now[1]) + tonumber(now[2]) / 1000000
end
local window = math.floor(t / 60)
local reset_ms = math.ceil(((window + 1) * 60 - t) * 1000)
local estimate = tonumber(ARGV[1])
local scopes = #KEYS / 2
local grants = {}
for i = 1, scopes do
  local rpm = tonumber(ARGV[3 * i])
  local tpm = tonumber(ARGV[3 * i + 1])
  local requests = tonumber(ARGV[3 * i + 2])
  if rpm > 0 then
    local used = tonumber(redis.call('GET', KEYS[2 * i - 1] .. ':' .. window) or '0')
    if used + 1 > rpm then return {i, 'requests', reset_ms} end
    requests = math.min(requests, rpm - used)
  end
  local tokens = estimate * requests
  if tpm > 0 then
    local used = tonumber(redis.call('GET', KEYS[2 * i] .. ':' .. window) or '0')
    if used > 0 and used + estimate > tpm then return {i, 'tokens', reset_ms} end
    if tokens > math.max(estimate, tpm - used) then
      requests = math.max(1, math.floor((tpm - used) / math.max(estimate, 1)))
      tokens = math.max(estimate, math.min(tokens, tpm - used))
    end
  end
  grants[i] = {requests, tokens}
end
local result = {0, window, reset_ms}
for i = 1, scopes do
  local requests = KEYS[2 * i - 1] .. ':' .. window
  local tokens = KEYS[2 * i] .. ':' .. window
  redis.call('INCRBY', requests, grants[i][1])
  redis.call('EXPIRE', requests, 120)
  redis.call('INCRBY', tokens, grants[i][2])
  redis.call('EXPIRE', tokens, 120)
  table.insert(result, grants[i][1])
  table.insert(result, grants[i][2])
end
return result
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


@dataclass(slots=True)
class _Lease:
    """Room this process holds in one scope's current window."""

    window: int = -1
    ends: float = 0.0  # time.monotonic() after which it is not spent
    requests: int = 0
    tokens: int = 0
    size: int = 1  # requests the next lease asks for

    def covers(self, now: float, estimate: int) -> bool:
        return now < self.ends and self.requests >= 1 and self.tokens >= estimate


def _lease_limit(limit: RateLimit, estimate: int) -> int:
    """The most requests one lease of this scope may hold."""
    most = LEASE_MAX
    if limit.requests_per_minute > 0:
        most = min(most, limit.requests_per_minute // LEASE_SHARE)
    if limit.tokens_per_minute > 0:
        most = min(most, limit.tokens_per_minute // (LEASE_SHARE * max(1, estimate)))
    return max(1, most)


class RateLimiter:
    def __init__(
        self, redis: Redis, prefix: str, *, clock: Callable[[], float] | None = None
    ) -> None:
        """`clock`: seconds (any origin) that replace the Redis server's clock for the windows
        and time.monotonic for the leases — for tests; every limiter sharing counters must
        share it."""
        self._clock = clock
        self._now = clock or time.monotonic
        self._redis = redis
        self._prefix = prefix
        self._script = redis.register_script(_ACQUIRE)
        self._settle = redis.register_script(_SETTLE)
        self._leases: dict[tuple[str, str], _Lease] = {}
        self._leasing = asyncio.Lock()

    def _keys(self, scope: Scope) -> tuple[str, str]:
        base = f"{self._prefix}llm:rl:{scope.kind}:{scope.key}"
        return f"{base}:req", f"{base}:tok"

    async def acquire(self, scopes: Sequence[Scope], estimate: int) -> Reservation | None:
        """Count one request (and `estimate` tokens) in every scope, or raise RateLimited
        naming the first scope that is full. None when no scope has a limit."""
        active = tuple(s for s in scopes if not s.limit.unlimited)
        if not active:
            return None
        estimate = max(0, estimate)
        while True:
            if (reservation := self._spend(active, estimate)) is not None:
                return reservation
            # One lease at a time: callers that waited may find room taken for them meanwhile.
            async with self._leasing:
                _, short = self._short(active, estimate)
                if short:
                    await self._lease(short, estimate)

    def leased(self, scopes: Sequence[Scope], estimate: int) -> Reservation | None:
        """Count one request from what this process has leased, if that covers it in every
        scope (no Redis, no await); None otherwise, and then `acquire` decides."""
        active = tuple(s for s in scopes if not s.limit.unlimited)
        return self._spend(active, max(0, estimate)) if active else None

    def _spend(self, active: Sequence[Scope], estimate: int) -> Reservation | None:
        leases, short = self._short(active, estimate)
        if short:
            return None
        for lease in leases:
            lease.requests -= 1
            lease.tokens -= estimate
        return Reservation(tuple(active), leases[0].window, estimate)

    def _short(
        self, active: Sequence[Scope], estimate: int
    ) -> tuple[list[_Lease], list[tuple[Scope, _Lease]]]:
        """Each scope's lease, and the scopes whose lease does not cover a request now."""
        now = self._now()
        leases = [self._leases.setdefault((s.kind, s.key), _Lease()) for s in active]
        short = [
            (scope, lease)
            for scope, lease in zip(active, leases, strict=True)
            if not lease.covers(now, estimate)
        ]
        return leases, short

    async def _lease(self, short: list[tuple[Scope, _Lease]], estimate: int) -> None:
        """Take room from Redis in the scopes whose lease does not cover a request."""
        keys: list[str] = []
        args: list[int | str] = [estimate, repr(self._clock()) if self._clock else ""]
        for scope, lease in short:
            keys.extend(self._keys(scope))
            size = min(lease.size, _lease_limit(scope.limit, estimate))
            args += [scope.limit.requests_per_minute, scope.limit.tokens_per_minute, size]
        result = await self._script(keys=keys, args=args)
        if int(result[0]) != 0:
            scope = short[int(result[0]) - 1][0]
            limit = result[1].decode() if isinstance(result[1], bytes) else str(result[1])
            reset_after = int(result[2]) / 1000
            raise RateLimited(
                rate_limited_message(scope, limit, reset_after),
                scope=scope.kind,
                limit=limit,
                reset_after=reset_after,
            )
        window, reset_after = int(result[1]), int(result[2]) / 1000
        now = self._now()
        for n, (scope, lease) in enumerate(short):
            requests, tokens = int(result[3 + 2 * n]), int(result[4 + 2 * n])
            if lease.window == window:
                # Used up within the minute: the next lease may be larger.
                lease.size = min(2 * lease.size, _lease_limit(scope.limit, estimate))
                lease.requests += requests
                lease.tokens += tokens
            else:
                # A new minute: what is left of the last one's lease is gone with it.
                lease.size = max(1, lease.size // 2)
                lease.requests, lease.tokens = requests, tokens
            lease.window = window
            lease.ends = now + reset_after - min(LEASE_MARGIN, reset_after / 2)
        if len(self._leases) > 10_000:
            self._leases = {k: v for k, v in self._leases.items() if v.ends > now}

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
        seconds = self._clock() if self._clock else (await self._redis.time())[0]
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
