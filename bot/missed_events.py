"""Catching up on room events the homeserver never pushed.

Synapse writes an appservice transaction to its database and then sends it. Stopped in between,
it does not send it after the restart: it only retries the transactions of an appservice it has
marked down. The event is in the room but never reaches the bot. So when the homeserver comes
back after being unreachable — seen by a probe every 2 s, or by any process's call meanwhile (a
restart can be shorter than the probe's interval) — and now and then in case an outage went
unnoticed, the bot reads the end of the timeline of the rooms it was recently busy in and puts
in the inbox whatever it never received. The inbox deduplicates by event ID, so a late delivery
by the homeserver changes nothing.

An event found this way is handled after those that arrived normally since, so its room sees it
out of order; being answered late beats not being answered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import asyncpg

from appservice.errors import HomeserverUnavailable, MatrixError, MatrixRequestError
from appservice.matrix import MatrixAPI
from bot.core.inbox import InboxStore

log = logging.getLogger(__name__)

# How far back to look after an outage, and, now and then, without one.
AFTER_OUTAGE = timedelta(minutes=10)
ROUTINE = timedelta(minutes=2)
# The routine sweep leaves events younger than this to the next one (30 s later, still within
# ROUTINE): an event sent a moment ago is in the timeline before its transaction reaches the
# bot, and taking it is a false "not received" (most likely what the 3 such warnings of a
# 50-minute soak without any outage were). After an outage the catch-up takes everything:
# what the outage lost was sent just before it.
ROUTINE_SETTLED = timedelta(seconds=15)
PAGE = 50
PROBE_INTERVAL = 2.0
PROBE_TIMEOUT = 5.0
HOMESERVER_OUTAGE = "homeserver-outage"
"""The run-once jobs' wake-up by which a process tells the one that catches up that it found
the homeserver unreachable."""


class MissedEvents:
    def __init__(
        self, matrix: MatrixAPI, inbox: InboxStore, wake: Callable[[Sequence[str]], None]
    ) -> None:
        self._matrix = matrix
        self._inbox = inbox
        self._wake = wake
        self._lock = asyncio.Lock()

    async def recent_rooms(self, window: timedelta, *, settled: timedelta = timedelta(0)) -> int:
        """Catch up the rooms with events handled within `window`. Returns how many events
        were missing. `settled`: events younger than this are left for the next sweep — they
        may still be on their way from the homeserver (ROUTINE_SETTLED)."""
        async with self._lock:  # an outage and the routine sweep may coincide
            found = 0
            for room_id in await self._inbox.rooms_active_since(window):
                try:
                    found += await self._room(room_id, window, settled)
                except MatrixRequestError as e:  # left the room since, say: the others still count
                    log.info("%s: not caught up (%s)", room_id, e)
            return found

    async def _room(self, room_id: str, window: timedelta, settled: timedelta) -> int:
        page = await self._matrix.messages(room_id, limit=PAGE)
        timeline: list[dict[str, Any]] = [
            e for e in reversed(page.get("chunk", [])) if isinstance(e.get("event_id"), str)
        ]
        if not timeline:
            return 0
        known = await self._inbox.known([e["event_id"] for e in timeline])
        # Only events sent since the bot started receiving this room's: what comes before may
        # predate its join, or the bot's database (a homeserver's late delivery of an old event
        # does not make what followed it missing).
        first = await self._inbox.first_received(room_id)
        if first is None:
            return 0
        now = time.time()
        oldest = max(now - window.total_seconds(), first.timestamp()) * 1000
        newest = (now - settled.total_seconds()) * 1000
        missed = [
            {**e, "room_id": room_id}
            for e in timeline
            if e["event_id"] not in known and oldest <= e.get("origin_server_ts", 0) <= newest
        ]
        if not missed:
            return 0
        rooms = await self._inbox.add_missed(missed)
        if rooms:
            log.warning(
                "%s: %d events not received from the homeserver, taken from the timeline",
                room_id,
                len(missed),
            )
            self._wake(rooms)
        return len(missed)

    async def watch(self) -> None:
        """Probe the homeserver; when it answers again after failing, catch up. Runs until
        cancelled.

        A restart shorter than the probe's interval would go unseen by the probe: any call that
        found the homeserver unreachable meanwhile counts too — this process's own
        (`MatrixAPI.unreachable`), and the other processes', which they announce to this one
        (the run-once jobs' wake-up `HOMESERVER_OUTAGE`, set on the same event)."""
        down = False
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            if self._matrix.unreachable.is_set():
                self._matrix.unreachable.clear()
                down = True
            try:
                await self._matrix.versions(timeout=PROBE_TIMEOUT)
            except HomeserverUnavailable:
                down = True
                continue
            except MatrixError as e:
                log.warning("homeserver probe: %s", e)
                continue
            if down:
                down = False
                try:
                    found = await self.recent_rooms(AFTER_OUTAGE)
                    log.info("homeserver back; %d missed events found", found)
                except (MatrixError, asyncpg.PostgresError, OSError) as e:
                    down = True  # try again at the next probe
                    log.warning("catching up after the homeserver came back failed: %s", e)
