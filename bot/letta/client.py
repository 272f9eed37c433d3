"""The letta-client SDK pointed at letta.base_url, and what its failures mean to Doryo.

Every failure becomes LettaUnavailable: text a room may read, saying what failed and what to
check. `reachable=False` (connection refused, timed out, 5xx) lets the built-in agent answer
instead (letta.fallback_to_native); a refusal (4xx) does not: the request was wrong, not the
server away.
"""

from __future__ import annotations

import logging

import httpx
from letta_client import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncLetta,
    LettaError,
)

from bot.core import strings
from bot.core.config import LettaConfig
from bot.core.errors import LettaUnavailable

log = logging.getLogger(__name__)


class LettaClient:
    def __init__(self, config: LettaConfig) -> None:
        self.config = config
        self.base_url = config.base_url
        key = config.api_key.get_secret_value()
        self.sdk = AsyncLetta(
            base_url=config.base_url,
            api_key=key or None,
            timeout=httpx.Timeout(config.timeout, connect=min(5.0, config.timeout)),
            max_retries=1,
        )

    async def close(self) -> None:
        await self.sdk.close()

    def error(self, e: Exception) -> LettaUnavailable:
        """A failure of the SDK (or the stream) as the error the room is told."""
        if isinstance(e, APITimeoutError):
            reason = f"no answer within {self.config.timeout:g} s"
            return LettaUnavailable(strings.LETTA_DOWN.format(url=self.base_url, reason=reason))
        if isinstance(e, APIConnectionError):
            reason = "cannot connect"
            return LettaUnavailable(strings.LETTA_DOWN.format(url=self.base_url, reason=reason))
        if isinstance(e, APIStatusError):
            reason = f"HTTP {e.status_code} {_detail(e)}".strip()
            if e.status_code >= 500:
                text = strings.LETTA_DOWN.format(url=self.base_url, reason=reason)
                return LettaUnavailable(text)
            text = strings.LETTA_REFUSED.format(url=self.base_url, reason=reason)
            return LettaUnavailable(text, reachable=True)
        if isinstance(e, (httpx.HTTPError, OSError)):
            reason = type(e).__name__
            return LettaUnavailable(strings.LETTA_DOWN.format(url=self.base_url, reason=reason))
        reason = f"{type(e).__name__}: {e}"[:300]
        return LettaUnavailable(
            strings.LETTA_REFUSED.format(url=self.base_url, reason=reason), reachable=True
        )


# What the SDK may raise: its own errors, and httpx's while a stream is read.
FAILURES: tuple[type[Exception], ...] = (LettaError, httpx.HTTPError, OSError)


def _detail(e: APIStatusError) -> str:
    body = e.body
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("message") or body.get("error")
        if detail:
            text = detail if isinstance(detail, str) else str(detail)
            return f"({text[:200]})"
    return ""
