"""Works through the inbox: each room's events in order, rooms concurrently.

The database is the queue. Waking a room starts a worker for it (unless one runs) that handles
its pending events oldest first and marks each done or failed. When the homeserver is down, the
worker retries the same event with backoff, so a room's order holds and nothing is dropped. After
a crash, `resume` wakes every room that still has pending events; the bot also calls it now and
then, which restarts a room whose worker died because the database was away.

An event's handling may let its room go on before it ends (`room_may_go_on`): what must happen
in the room's order is done — who may ask was decided from the room's state, the question is in
the session's history — and what is left is slow and touches nothing the next events read (a
model writing an answer for seconds). The next events are then handled beside it; this one is
still marked done only when it ends, and the room's worker keeps the room (and its lease) until
it has: a crash or a takeover before then handles it again, by the rules below.

Handling an event twice is made harmless by the handler, not here: it is told the attempt number,
and replies are sent once per event whatever the number of attempts (bot.core.replies).

With several processes (docs/deployment.md), a room's worker first takes the room's lease
(bot.core.leases): if another process holds it, that process handles the room, and looks at
its inbox again after letting go. A process that dies drops its leases; the others' `resume`,
every LOOK_INTERVAL (bot.core.leases), finds its rooms' pending events and takes them over.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

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
# Events of one room going on beside its next ones, at most: a member sending @ask after @ask
# must not start answers without bound (the room's worker waits for one to end).
MAX_GOING_ON = 4


_going_on: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "room_may_go_on", default=None
)


def room_may_go_on() -> None:
    """Called while handling an event: the room's next events may be handled beside what is
    left of this one (see the module's doc for when that is right). Outside the dispatcher, and
    when called again, it does nothing."""
    go_on = _going_on.get()
    if go_on is not None:
        go_on()


@dataclass(eq=False)
class _Room:
    """A room being worked through by this process."""

    dirty: bool = False
    """Woken while its worker was busy: look at its inbox again before letting go."""
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when it is woken or an event that let it go on ends."""
    going_on: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    """Events that let the room go on and have not ended, by inbox ID."""
    started: set[int] = field(default_factory=set)
    """Inbox IDs this worker started: not started again when a read of the inbox ran as one
    of them ended."""

    def wake(self) -> None:
        self.dirty = True
        self.changed.set()


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
        self._rooms: dict[str, _Room] = {}
        self._tasks = BackgroundTasks()
        self._handling: set[asyncio.Task[None]] = set()
        """Events being handled (a room's worker waits for them; stop() cancels them)."""
        self._stopping = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def wake(self, room_ids: Sequence[str]) -> None:
        """There are new pending events in these rooms."""
        if self._stopping.is_set():
            return  # they stay pending; `resume` picks them up at the next start
        for room_id in room_ids:
            if (room := self._rooms.get(room_id)) is not None:
                room.wake()
            else:
                self._idle.clear()
                room = self._rooms[room_id] = _Room()
                self._tasks.spawn(self._drain(room_id, room), f"room {room_id}")

    def nudge(self, room_ids: Sequence[str]) -> None:
        """There are new pending events in these rooms, which another process is to take: look
        again only at those this process is working through (it may be letting go of one as
        the other tries it)."""
        for room_id in room_ids:
            if (room := self._rooms.get(room_id)) is not None:
                room.wake()

    async def resume(self) -> int:
        """Wake every room with pending events (after a start). Returns how many."""
        rooms = await self._store.rooms_with_pending()
        self.wake(rooms)
        return len(rooms)

    @property
    def busy_rooms(self) -> int:
        return len(self._rooms)

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
        handling = list(self._handling)
        for task in handling:
            task.cancel()
        await self._tasks.cancel_all()
        await asyncio.gather(*handling, return_exceptions=True)

    async def _drain(self, room_id: str, room: _Room) -> None:
        try:
            while not self._stopping.is_set():
                room.dirty = False
                async with self._slots:
                    if not await self._take(room_id):
                        # Another process has the room, and looks again as it lets go.
                        self._metrics.lease_misses.inc()
                        return
                    self._metrics.rooms_active.inc()
                    try:
                        await self._work_through(room_id, room)
                    finally:
                        # The lease is kept until every event of the room has ended: another
                        # process would handle one still going on a second time.
                        if room.going_on:
                            await asyncio.wait(list(room.going_on.values()))
                        self._metrics.rooms_active.dec()
                        if self._leases is not None:
                            await self._leases.release_room(room_id)
                # Woken while letting go (another process's wake-up went unheeded meanwhile):
                # look again.
                if not room.dirty:
                    return
        finally:
            # No await between the last check of `dirty` and this: a wake() cannot slip between.
            del self._rooms[room_id]
            if not self._rooms:
                self._idle.set()

    async def _take(self, room_id: str) -> bool:
        if self._leases is None:
            return True
        return await self._leases.take_room(room_id)

    def _holds(self, room_id: str) -> bool:
        return self._leases is None or self._leases.holds_room(room_id)

    async def _work_through(self, room_id: str, room: _Room) -> None:
        first = True
        while not self._stopping.is_set() and self._holds(room_id):
            room.dirty = False
            room.changed.clear()
            pending = await self._store.pending(room_id)
            if first and pending and pending[0].attempts > 0 and self._leases is not None:
                # Picked up before, by a process that stopped or died on it.
                self._metrics.takeovers.labels("room").inc()
            first = False
            # What was started and is not pending any more has ended: forget it (the inbox's
            # IDs grow, and pending events are read oldest first).
            oldest = pending[0].id if pending else None
            room.started = {i for i in room.started if oldest is not None and i >= oldest}
            batch = [e for e in pending if e.id not in room.started]
            for event in batch:
                while len(room.going_on) >= MAX_GOING_ON:
                    room.changed.clear()
                    await room.changed.wait()
                if self._stopping.is_set() or not self._holds(room_id):
                    return  # the rest stays pending, for whoever holds the room next
                await self._start(event, room)
            if not batch and not room.dirty:
                if not room.going_on:
                    return
                await room.changed.wait()  # a wake-up, or an event that went on has ended

    async def _start(self, event: InboxEvent, room: _Room) -> None:
        """Handle the event; return when it has ended or has let the room go on. A failure of
        its own handling (the database away as it was marked) ends the room's worker, as it did
        when the event was handled in it: the room's order holds, and `resume` starts again."""
        room.started.add(event.id)
        gone_on = asyncio.Event()
        task = asyncio.create_task(
            self._handle(event, gone_on.set), name=f"event {event.event_id}"
        )
        self._handling.add(task)
        task.add_done_callback(self._handling.discard)
        waiting = asyncio.ensure_future(gone_on.wait())
        try:
            await asyncio.wait([task, waiting], return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
        if task.done():
            task.result()
            return
        room.going_on[event.id] = task

        def ended(_: asyncio.Task[None]) -> None:
            del room.going_on[event.id]
            if not task.cancelled() and (error := task.exception()) is not None:
                log.error("handling %s failed", event.event_id, exc_info=error)
                room.started.discard(event.id)  # still pending: the room's worker tries again
            room.changed.set()

        task.add_done_callback(ended)

    async def _handle(self, event: InboxEvent, go_on: Callable[[], None]) -> None:
        _going_on.set(go_on)
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
