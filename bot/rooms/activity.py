"""While the bot works on a request: typing in the room, and a status on its presence.

Both cost the homeserver work it does for everyone in the bot's rooms (a typing notice goes to
every member's sync and to every appservice of the room; a presence change to everyone who shares
a room with the bot), and under load that work lands on a homeserver that is already slow
(bench/load.py: without them Doryo came closest to the echo appservice). So:

- typing shows only when a request is not answered within DELAY — a reply within a second needs
  no notice, and a notice that shows for a moment is flicker;
- the presence status is set when the first such request starts and cleared LINGER seconds after
  the last one ended: a busy hour changes it twice, not twice per request.

Each process keeps its own count: with several workers, one that goes idle clears the status
while another may still work (docs/behaviour.md); the status is a hint, nothing depends on it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from appservice.matrix import MatrixAPI
from bot.core import strings
from bot.core.tasks import stop

DELAY = 1.0
TYPING_MS = 60_000
LINGER = 15.0


class Activity:
    def __init__(self, matrix: MatrixAPI, delay: float = DELAY, linger: float = LINGER) -> None:
        self._matrix = matrix
        self._delay = delay
        self._linger = linger
        self._working = 0
        self._status_shown = False
        self._clearing: asyncio.Task[None] | None = None

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
            await self._show_status()

        task = asyncio.create_task(show(), name=f"busy in {room_id}")
        try:
            yield
        finally:
            await stop(task)
            if shown.is_set():
                self._working -= 1
                await self._matrix.set_typing_no_fail(room_id, False)
                if self._working == 0 and self._clearing is None:
                    self._clearing = asyncio.create_task(self._clear_status(), name="busy status")

    async def _show_status(self) -> None:
        if self._clearing is not None:
            await stop(self._clearing)
            self._clearing = None
        if not self._status_shown:
            self._status_shown = True
            await self._matrix.set_presence_no_fail("online", strings.BUSY_STATUS)

    async def _clear_status(self) -> None:
        await asyncio.sleep(self._linger)
        self._clearing = None  # from here on it is not cancelled: a new request sets it again
        if self._working == 0 and self._status_shown:
            self._status_shown = False
            await self._matrix.set_presence_no_fail("online", "")

    async def close(self) -> None:
        """Stop waiting to clear the status (the process is stopping: its presence goes
        offline)."""
        if self._clearing is not None:
            await stop(self._clearing)
            self._clearing = None
