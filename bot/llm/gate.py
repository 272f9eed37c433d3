"""The provider gate: a call's rate-limit check runs while the SDK builds the request, and the
request waits for the check's answer at the last moment before it leaves.

Contract:
- `with gate.held(check): await sdk_call(...)` — every HTTP request the SDK sends inside the
  block waits for `check` (a future) just before it leaves; `None` holds nothing.
- `check` resolving (to anything): the request leaves. `check` raising (RateLimited): the
  request never leaves; the SDK wraps the exception, and the adapter re-raises it as itself
  (providers.raise_sdk_error), so nothing reaches the provider and the caller sees the refusal.
- A timeout or cancellation of the call while it waits ends the wait, never the check: the
  check's answer still counts (its tokens are reserved and settled by the router).
- The held check is per asyncio task (a context variable of this gate): concurrent calls on one
  SDK client each wait for their own.
- Install `gate.hook` once per SDK client: `event_hooks={"request": [gate.hook]}`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any


class ProviderGate:
    def __init__(self) -> None:
        # One per router, made once: a context variable per gate, not one per module, so that
        # two routers in a process (tests, tools) never see each other's checks.
        self._check: ContextVar[asyncio.Future[Any] | None] = ContextVar("llm_gate", default=None)

    @contextlib.contextmanager
    def held(self, check: asyncio.Future[Any] | None) -> Iterator[None]:
        """Requests sent by SDK calls in this block wait for `check` first."""
        token = self._check.set(check)
        try:
            yield
        finally:
            self._check.reset(token)

    async def hook(self, request: object) -> None:
        """httpx request hook: hold the request until the check answers; raise if it refused."""
        check = self._check.get()
        if check is not None and not check.done():
            await asyncio.shield(check)
        elif check is not None:
            check.result()  # raises what refused it
