"""Waiting for another process (the bot, Synapse, PostgreSQL) to reach a state."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T]], timeout: float = 15) -> T:
    """Call `check` until it returns something truthy; TimeoutError after `timeout` seconds.

    There is no event to wait on across processes, so this polls (every 50 ms).
    """
    async with asyncio.timeout(timeout):
        while True:
            result = await check()
            if result:
                return result
            await asyncio.sleep(0.05)
