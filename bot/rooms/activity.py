"""While the bot works on a request: typing in the room, and a status on its presence.

Both only appear when the work takes longer than a moment (DELAY), so a quick `!ping` does not
make the room flicker. The presence status stays while any request is in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from appservice.matrix import MatrixAPI
from bot.core import strings
from bot.core.tasks import stop

DELAY = 0.3
TYPING_MS = 60_000


class Activity:
    def __init__(self, matrix: MatrixAPI, delay: float = DELAY) -> None:
        self._matrix = matrix
        self._delay = delay
        self._working = 0

    @property
    def working(self) -> int:
        """Requests taking long enough to show (for tests and /metrics)."""
        return self._working

    @contextlib.asynccontextmanager
    async def busy(self, room_id: str) -> AsyncIterator[None]:
        shown = asyncio.Event()

        async def show() -> None:
            await asyncio.sleep(self._delay)
            self._working += 1
            shown.set()
            await self._matrix.set_typing_no_fail(room_id, True, TYPING_MS)
            if self._working == 1:
                await self._matrix.set_presence_no_fail("online", strings.BUSY_STATUS)

        task = asyncio.create_task(show(), name=f"busy in {room_id}")
        try:
            yield
        finally:
            await stop(task)
            if shown.is_set():
                self._working -= 1
                await self._matrix.set_typing_no_fail(room_id, False)
                if self._working == 0:
                    await self._matrix.set_presence_no_fail("online", "")
