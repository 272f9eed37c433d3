"""Works through the inbox: each room's events in order, rooms concurrently.

The database is the queue. Waking a room starts a worker for it (unless one runs) that handles
its pending events oldest first and marks each done or failed. When the homeserver is down, the
worker retries the same event with backoff, so a room's order holds and nothing is dropped. After
a crash, `resume` wakes every room that still has pending events; the bot also calls it now and
then, which restarts a room whose worker died because the database was away.

Handling an event twice is made harmless by the handler, not here: it is told the attempt number,
and replies are sent once per event whatever the number of attempts (bot.core.replies).

With several processes (docs/deployment.md), a room's worker first takes the room's lease
(bot.core.leases): if another process holds it, that process handles the room, and looks at
its inbox again after letting go. A process that dies drops its leases; the others' `resume`,
every LOOK_INTERVAL (bot.core.leases), finds its rooms' pending events and takes them over.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from appservice.errors import HomeserverUnavailable
from bot.core.inbox import InboxEvent, InboxStore
from bot.core.leases import Leases
from bot.core.log import bind
from bot.core.metrics import Metrics
from bot.core.tasks import BackgroundTasks

log = logging.getLogger(__name__)

Handler = Callable[[InboxEvent, int], Awaitable[None]]
"""Called with the event and the attempt number: 1, then more after a crash or a retry."""

# Failures of what the bot depends on, not of the event: wait and handle the same event again.
RETRYABLE = (
    HomeserverUnavailable,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    ConnectionError,
)
# asyncpg's own state broke, as when the database dies mid-query — or a bug of asyncpg's: retried
# a few times (a glitch passes), then the event is marked failed like any other error.
UNSURE = (asyncpg.InternalClientError,)
UNSURE_RETRIES = 4
RETRY_FIRST_DELAY = 0.5
# How many times an event may be picked up (the bot stopping or crashing while on it) before it
# is marked failed.
MAX_PICKUPS = 10
RETRY_MAX_DELAY = 30.0


class Dispatcher:
    def __init__(
        self,
        store: InboxStore,
        handler: Handler,
        metrics: Metrics,
        *,
        max_parallel_rooms: int = 32,
        leases: Leases | None = None,
    ) -> None:
        """`leases`: this process's claims when others may handle the same inbox."""
        self._store = store
        self._leases = leases
        self._handler = handler
        self._metrics = metrics
        self._slots = asyncio.Semaphore(max_parallel_rooms)
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._dirty: set[str] = set()
        self._tasks = BackgroundTasks()
        self._stopping = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def wake(self, room_ids: Sequence[str]) -> None:
        """There are new pending events in these rooms."""
        if self._stopping.is_set():
            return  # they stay pending; `resume` picks them up at the next start
        for room_id in room_ids:
            if room_id in self._workers:
                self._dirty.add(room_id)
            else:
                self._idle.clear()
                self._workers[room_id] = self._tasks.spawn(self._drain(room_id), f"room {room_id}")

    def nudge(self, room_ids: Sequence[str]) -> None:
        """There are new pending events in these rooms, which another process is to take: look
        again only at those this process is working through (it may be letting go of one as
        the other tries it)."""
        for room_id in room_ids:
            if room_id in self._workers:
                self._dirty.add(room_id)

    async def resume(self) -> int:
        """Wake every room with pending events (after a start). Returns how many."""
        rooms = await self._store.rooms_with_pending()
        self.wake(rooms)
        return len(rooms)

    @property
    def busy_rooms(self) -> int:
        return len(self._workers)

    async def idle(self, timeout: float) -> None:
        """Wait until no room has work in progress (for tests and benchmarks)."""
        async with asyncio.timeout(timeout):
            await self._idle.wait()

    async def stop(self, timeout: float = 10.0) -> None:
        """Let events being handled finish (up to `timeout`), then cancel the rest.

        Cancelled events stay pending in the database and are handled after the next start.
        """
        self._stopping.set()
        if not await self._tasks.wait(timeout):
            log.warning("stopping: cancelling %d room workers still busy", len(self._tasks))
        await self._tasks.cancel_all()

    async def _drain(self, room_id: str) -> None:
        try:
            while not self._stopping.is_set():
                self._dirty.discard(room_id)
                async with self._slots:
                    if not await self._take(room_id):
                        # Another process has the room, and looks again as it lets go.
                        self._metrics.lease_misses.inc()
                        return
                    self._metrics.rooms_active.inc()
                    try:
                        await self._work_through(room_id)
                    finally:
                        self._metrics.rooms_active.dec()
                        if self._leases is not None:
                            await self._leases.release_room(room_id)
                # Woken while letting go (another process's wake-up went unheeded meanwhile):
                # look again.
                if room_id not in self._dirty:
                    return
        finally:
            # No await between the last check of _dirty and this: a wake() cannot slip between.
            del self._workers[room_id]
            if not self._workers:
                self._idle.set()

    async def _take(self, room_id: str) -> bool:
        if self._leases is None:
            return True
        return await self._leases.take_room(room_id)

    def _holds(self, room_id: str) -> bool:
        return self._leases is None or self._leases.holds_room(room_id)

    async def _work_through(self, room_id: str) -> None:
        first = True
        while not self._stopping.is_set() and self._holds(room_id):
            self._dirty.discard(room_id)
            batch = await self._store.pending(room_id)
            if first and batch and batch[0].attempts > 0 and self._leases is not None:
                # Picked up before, by a process that stopped or died on it.
                self._metrics.takeovers.labels("room").inc()
            first = False
            for event in batch:
                if self._stopping.is_set() or not self._holds(room_id):
                    return  # the rest stays pending, for whoever holds the room next
                await self._handle(event)
            if not batch and room_id not in self._dirty:
                return

    async def _handle(self, event: InboxEvent) -> None:
        delay = RETRY_FIRST_DELAY
        with bind(room=event.room_id, event=event.event_id):
            if event.attempts >= MAX_PICKUPS:
                # The bot went down every time it worked on this one: don't let it block the room.
                log.error("giving up on %s after %d attempts", event.event_id, event.attempts)
                self._metrics.events_processed.labels("failed").inc()
                await self._store.mark_failed(event.id, f"gave up after {event.attempts} attempts")
                return
            await self._store.start_attempt(event.id)
            attempt = event.attempts + 1
            unsure = 0
            while True:
                try:
                    await self._handler(event, attempt)
                except (*RETRYABLE, *UNSURE) as e:
                    if self._stopping.is_set() or not self._holds(event.room_id):
                        return  # stays pending
                    if isinstance(e, UNSURE):
                        unsure += 1
                        if unsure > UNSURE_RETRIES:
                            await self._failed(event, e)
                            return
                    log.warning("%s (%s); retrying in %.1f s", type(e).__name__, e, delay)
                    self._metrics.homeserver_retries.inc()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX_DELAY)
                    attempt += 1
                    continue
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    await self._failed(event, e)
                    return
                await self._store.mark_done(event.id)
                self._metrics.events_processed.labels("done").inc()
                lag = time.time() - event.received_at.timestamp()
                self._metrics.processing_lag.observe(max(0.0, lag))
                return

    async def _failed(self, event: InboxEvent, error: Exception) -> None:
        log.error("handling %s failed", event.event_id, exc_info=error)
        self._metrics.errors.labels("handler").inc()
        self._metrics.events_processed.labels("failed").inc()
        await self._store.mark_failed(event.id, f"{type(error).__name__}: {error}")
