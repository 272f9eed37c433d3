"""While the bot works on a request: typing in the room, and a status on its presence.

Both cost the homeserver work it does for everyone in the bot's rooms (a typing notice goes to
every member's sync and to every appservice of the room; a presence change to everyone who shares
a room with the bot), and under load that work lands on a homeserver that is already slow
(bench/load.py: without them Doryo came closest to the echo appservice). So:

- typing shows only when the bot has worked on a request for DELAY without a reply on its way —
  a reply within a second needs no notice, a notice that shows for a moment is flicker, and a
  notice sent while a reply is on its way would arrive beside it (under load the send alone took
  longer than DELAY, and the notice came on and off around nearly every reply). Work that goes
  on after a message (an answer's model still writing after its "…") counts DELAY again;
- the presence status is set when the first request shows typing and is cleared LINGER seconds
  after the last one ended: a busy hour changes it twice, not twice per request.

Each process keeps its own count: with several workers, one that goes idle clears the status
while another may still work (docs/behaviour.md); the status is a hint, nothing depends on it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

from appservice.matrix import MatrixAPI
from bot.core import strings
from bot.core.tasks import stop

DELAY = 1.0
TYPING_MS = 60_000
LINGER = 15.0


class Busy:
    """One request being worked on (`Activity.busy`)."""

    def __init__(self, activity: Activity, room_id: str) -> None:
        self._activity = activity
        self._room_id = room_id
        self.shown = False
        self._ended = False
        self._sending = 0
        self._showing: asyncio.Task[None] | None = None

    def _wait_then_show(self) -> None:
        self._showing = asyncio.create_task(self._show(), name=f"busy in {self._room_id}")

    async def _show(self) -> None:
        await asyncio.sleep(self._activity._delay)
        self.shown = True
        self._activity._working += 1
        typing = self._activity._typing
        typing[self._room_id] = typing.get(self._room_id, 0) + 1
        await self._activity._matrix.set_typing_no_fail(self._room_id, True, TYPING_MS)
        await self._activity._show_status()

    @contextlib.contextmanager
    def replying(self) -> Iterator[None]:
        """While a reply to the request is on its way to the homeserver: no typing starts (it
        would arrive beside the reply); the wait for it starts again once no reply is on its
        way, if the work goes on. Typing that shows already stays until the work ends."""
        self._sending += 1
        if self._showing is not None and not self.shown:
            self._showing.cancel()
        try:
            yield
        finally:
            self._sending -= 1
            if self._sending == 0 and not self.shown and not self._ended:
                self._wait_then_show()

    async def _end(self) -> None:
        self._ended = True
        if self._showing is not None:
            await stop(self._showing)
        if self.shown:
            self._activity._working -= 1
            typing = self._activity._typing
            typing[self._room_id] -= 1
            if typing[self._room_id] == 0:  # not while another request of the room goes on
                del typing[self._room_id]
                await self._activity._matrix.set_typing_no_fail(self._room_id, False)


class Activity:
    def __init__(self, matrix: MatrixAPI, delay: float = DELAY, linger: float = LINGER) -> None:
        self._matrix = matrix
        self._delay = delay
        self._linger = linger
        self._working = 0
        self._typing: dict[str, int] = {}
        """Requests showing typing, per room (a room's requests may be worked on at once)."""
        self._status_shown = False
        self._clearing: asyncio.Task[None] | None = None

    @property
    def working(self) -> int:
        """Requests taking long enough to show (for tests and /metrics)."""
        return self._working

    @contextlib.asynccontextmanager
    async def busy(self, room_id: str) -> AsyncIterator[Busy]:
        """While a request in `room_id` is worked on; its replies go out in `Busy.replying`."""
        busy = Busy(self, room_id)
        busy._wait_then_show()
        try:
            yield busy
        finally:
            await busy._end()
            if busy.shown and self._working == 0 and self._clearing is None:
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
