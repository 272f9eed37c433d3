"""A circuit breaker per provider, so that a dead provider is skipped quickly.

closed ──(`failures` failed calls in a row)──▶ open ──(`cooldown` seconds)──▶ half-open
  ▲                                              ▲                               │
  └──────────────(the probe call succeeds)───────┴────────(the probe fails)──────┘

Half-open lets exactly one call through (the probe); others are skipped until it answers. The
state lives in this process: each Doryo process finds out about a dead provider by itself, which
costs at most `failures` calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(
        self, failures: int, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = failures
        self.cooldown = cooldown
        self._clock = clock
        self._state: State = "closed"
        self._consecutive = 0
        self._opened_at = 0.0
        self._probing = False
        self.last_error = ""

    @property
    def state(self) -> State:
        if self._state == "open" and self._clock() >= self._opened_at + self.cooldown:
            return "half_open"
        return self._state

    def allow(self) -> bool:
        """May a call go through now? In half-open, the first caller gets to probe."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._probing:
            self._state = "half_open"
            self._probing = True
            return True
        return False

    def success(self) -> None:
        self._state = "closed"
        self._consecutive = 0
        self._probing = False

    def failure(self, error: str = "") -> None:
        self._consecutive += 1
        self.last_error = error or self.last_error
        if self._probing or self._consecutive >= self.threshold:
            self._state = "open"
            self._opened_at = self._clock()
            self._probing = False

    def release(self) -> None:
        """The probe ended without telling anything (cancelled, not retryable): let another
        call probe."""
        self._probing = False

    def retry_in(self) -> float:
        """Seconds until a probe is allowed (0 when not open)."""
        if self._state != "open":
            return 0.0
        return max(0.0, self._opened_at + self.cooldown - self._clock())

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive
