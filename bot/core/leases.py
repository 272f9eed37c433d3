"""What this process holds in the whole deployment: rooms, the run-once jobs, its own liveness.

Several Doryo processes may share one PostgreSQL (docs/deployment.md). Each holds its claims as
PostgreSQL **session advisory locks on one connection of its own**, the lease connection:

- `(WORKER, key)`: this process is alive. Taken at start with a random key; an action records the
  key of the process that runs it, and `live_workers` reads which keys are held (`pg_locks`), so
  a running action whose process died is told apart from one still running elsewhere.
- `(ROOM, hash of the room ID)`: this process handles the room's events, in order; taken while
  it works through them, released when none are left (bot.core.dispatcher).
- `(JOBS, 0)`: this process runs what must run once in the deployment — reminders, card expiry,
  recovery, document reading, indexing, retention, catching up (bot.app).

Why advisory locks, not a lease table or Redis Streams: a process that dies, kill -9 included,
closes its connection and PostgreSQL drops its locks at once, so its rooms and jobs are free
within the others' next look (LOOK_INTERVAL), with no heartbeat writes and no expiry to tune;
the inbox and every job already live in PostgreSQL, so there is one source of truth. The price:
a process that loses its lease connection (a PostgreSQL restart, a network cut) has lost its
claims at once, while its work may still be running. It stops taking new events and jobs from
that moment (`lost`), and what was running finishes under the rules for a crash: replies are
sent once per event by transaction ID, and an action is never run twice.

The same connection LISTENs for wake-ups (`pg_notify` on WAKE_CHANNEL): which rooms have new
events, sent by whichever process unpacked them. Every process hears every wake-up, but only one
goes for each room at once: the room's **preferred** process, the live worker key that ranks
first for the room by rendezvous hashing (`prefers`). Without it, N processes would all try the
room's lock for each event and N − 1 would fail (measured: the misses grew with the events); with
it, each room keeps to one process while the set of processes stays the same (its caches stay
warm), and a process joining or leaving moves only its share of rooms. The preference is a
hint, never a claim: the lock decides, and every process's look at pending rooms
(LOOK_INTERVAL) takes any room nobody works on — so a preferred process that just died, is
stopping, or has all its room slots busy costs at most that long.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import asyncpg

from bot.core.metrics import Metrics

log = logging.getLogger(__name__)

WORKER = 0x646F01
ROOM = 0x646F02
JOBS = 0x646F03

WAKE_CHANNEL = "doryo_wake"
# A notification's payload is at most 8000 bytes; room IDs are sent in chunks under it.
_PAYLOAD_LIMIT = 7000
RECONNECT_MAX_DELAY = 10.0
LOOK_INTERVAL = 2.0
"""How often a process looks for rooms with pending events and for free jobs: the longest a
dead process's work waits for another to take it over."""


def preferred(room_id: str, keys: Iterable[int]) -> int | None:
    """The worker key that ranks first for the room (rendezvous hashing: each key's score is
    a hash of the key and the room; a key leaving moves only the rooms it ranked first for)."""
    best: int | None = None
    best_score = b""
    for key in keys:
        score = hashlib.blake2b(f"{key}:{room_id}".encode(), digest_size=8).digest()
        if best is None or score > best_score:
            best, best_score = key, score
    return best


def room_key(room_id: str) -> int:
    """The room's lock key: a stable 32-bit hash (two rooms may share one: they are then
    handled one after the other, which costs only time)."""
    return zlib.crc32(room_id.encode()) - 2**31


def wake_payloads(room_ids: Sequence[str]) -> list[str]:
    """The room IDs as JSON lists, each small enough for one notification."""
    payloads: list[str] = []
    chunk: list[str] = []
    size = 2
    for room_id in room_ids:
        if chunk and size + len(room_id) + 4 > _PAYLOAD_LIMIT:
            payloads.append(json.dumps(chunk))
            chunk, size = [], 2
        chunk.append(room_id)
        size += len(json.dumps(room_id)) + 2
    if chunk:
        payloads.append(json.dumps(chunk))
    return payloads


def woken_rooms(payload: str) -> list[str]:
    """The rooms a notification names; nothing for a malformed one (anyone with access to the
    database can notify: it only makes a process look at a room's inbox sooner)."""
    try:
        rooms = json.loads(payload)
    except ValueError:
        return []
    if not isinstance(rooms, list):
        return []
    return [room for room in rooms if isinstance(room, str) and room.startswith("!")]


JOB_PREFIX = "job:"
"""A payload `job:<name>` wakes that run-once job's loop in the process running it (a reminder
was added, a file was queued to be read, the homeserver was found unreachable)."""


async def notify_rooms(pool: asyncpg.Pool, room_ids: Sequence[str]) -> None:
    """Tell every process listening that these rooms have new events."""
    for payload in wake_payloads(room_ids):
        await pool.execute("SELECT pg_notify($1, $2)", WAKE_CHANNEL, payload)


async def notify_job(pool: asyncpg.Pool, name: str) -> None:
    """Tell the process running the run-once jobs that this one has work."""
    await pool.execute("SELECT pg_notify($1, $2)", WAKE_CHANNEL, JOB_PREFIX + name)


_LIVE_WORKERS = """
    SELECT objid FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid = $1
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


class Leases:
    """This process's advisory locks on its lease connection, and the wake-ups it hears.

    `on_wake(rooms)` is called for each notification; `on_lost()` as soon as the connection is
    lost (with it every claim: the caller stops what it ran under them); `on_regained()` after
    the connection came back (the caller looks again at what is pending).
    """

    def __init__(
        self,
        url: str,
        metrics: Metrics,
        *,
        on_wake: Callable[[list[str]], None] | None = None,
        on_regained: Callable[[], None] | None = None,
        on_job: Callable[[str], None] | None = None,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self._url = url
        self._metrics = metrics
        self._on_wake = on_wake
        self._on_regained = on_regained
        self._on_job = on_job
        self._on_lost = on_lost
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        self._rooms: dict[str, int] = {}
        """Rooms held, with how many times (a session lock is re-entrant and counted)."""
        self._jobs = False
        self.key = 0
        """This process's worker key while it holds its liveness lock."""
        self.held = asyncio.Event()
        """Set while the lease connection is up and this process's liveness lock is held."""
        self.lost = asyncio.Event()
        """Set when the lease connection was lost, until it is back."""
        self._reconnecting: asyncio.Task[None] | None = None
        self._closed = False
        self._peers: frozenset[int] = frozenset()
        """The live worker keys, as last looked at (`look_at_peers`)."""

    async def open(self) -> None:
        await self._connect()

    async def _connect(self) -> None:
        conn = await asyncpg.connect(self._url)
        try:
            key = self.key or secrets.randbits(31)
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", WORKER, key):
                key = secrets.randbits(31)  # another live process drew the same
            await conn.add_listener(WAKE_CHANNEL, self._heard)
            peers = await conn.fetch(_LIVE_WORKERS, WORKER)
        except BaseException:
            conn.terminate()  # no await: a failing connection's close could fail or hang
            raise
        conn.add_termination_listener(self._terminated)
        self._conn = conn
        self.key = key
        self._peers = frozenset(int(row["objid"]) for row in peers)
        self.lost.clear()
        self.held.set()

    def _heard(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if payload.startswith(JOB_PREFIX):
            if self._on_job is not None and self._jobs:
                self._on_job(payload.removeprefix(JOB_PREFIX))
            return
        if self._on_wake is not None:
            rooms = woken_rooms(payload)
            if rooms:
                self._on_wake(rooms)

    def _terminated(self, conn: object) -> None:
        if conn is not self._conn or self._closed:
            return
        log.warning(
            "the lease connection to PostgreSQL was lost: this process no longer holds its "
            "rooms (%d) or jobs (%s); reconnecting",
            len(self._rooms),
            "held" if self._jobs else "not held",
        )
        self._forget_claims()
        if self._on_lost is not None:
            self._on_lost()
        if self._reconnecting is None or self._reconnecting.done():
            self._reconnecting = asyncio.get_running_loop().create_task(
                self._reconnect(), name="leases: reconnect"
            )

    def _forget_claims(self) -> None:
        self._conn = None
        self._peers = frozenset()
        self._rooms.clear()
        self._jobs = False
        self._metrics.rooms_held.set(0)
        self._metrics.jobs_held.set(0)
        self.held.clear()
        self.lost.set()

    async def _reconnect(self) -> None:
        delay = 0.5
        while not self._closed:
            try:
                await self._connect()
            except Exception as e:  # whatever it is, this task must go on trying
                log.warning("leases: cannot reach PostgreSQL yet (%s: %s)", type(e).__name__, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_DELAY)
                continue
            log.info("leases: the lease connection is back (worker key %d)", self.key)
            if self._on_regained is not None:
                self._on_regained()
            return

    def _drop(self, conn: asyncpg.Connection, why: object) -> None:
        """A connection whose locks are in doubt is worth nothing: drop it, and with it every
        claim, rather than hold rooms it may not hold (then reconnect)."""
        log.warning("leases: %s", why)
        if not conn.is_closed():
            conn.terminate()  # which tells _terminated, most of the time
        self._terminated(conn)  # for when it was closed without telling; once either way

    async def _try(self, query: str, *args: Any) -> Any:
        """Run a lock query on the lease connection; None when it is not up."""
        async with self._lock:
            conn = self._conn
            if conn is None:
                return None
            if conn.is_closed():
                self._drop(conn, "the lease connection was closed")
                return None
            try:
                return await conn.fetchval(query, *args)
            except Exception as e:
                # Whatever it is — the server gone, or asyncpg's own state broken by that
                # (InternalClientError, seen when PostgreSQL died mid-query) — the same.
                self._drop(conn, f"{type(e).__name__}: {e}")
                return None

    # Rooms ---------------------------------------------------------------------------------

    async def take_room(self, room_id: str) -> bool:
        """Claim the room for this process. False if another process holds it (or the lease
        connection is down)."""
        taken = await self._try("SELECT pg_try_advisory_lock($1, $2)", ROOM, room_key(room_id))
        if not taken:
            return False
        self._rooms[room_id] = self._rooms.get(room_id, 0) + 1
        self._metrics.rooms_held.set(len(self._rooms))
        return True

    def holds_room(self, room_id: str) -> bool:
        return room_id in self._rooms

    async def release_room(self, room_id: str) -> None:
        count = self._rooms.get(room_id, 0)
        if count == 0:
            return  # lost with the connection
        if count == 1:
            del self._rooms[room_id]
        else:
            self._rooms[room_id] = count - 1
        self._metrics.rooms_held.set(len(self._rooms))
        await self._try("SELECT pg_advisory_unlock($1, $2)", ROOM, room_key(room_id))

    @property
    def rooms_held(self) -> int:
        return len(self._rooms)

    # Jobs ----------------------------------------------------------------------------------

    async def take_jobs(self) -> bool:
        """Claim the run-once jobs if no process holds them. True if this process holds them
        (now or already)."""
        if self._jobs:
            return True
        if await self._try("SELECT pg_try_advisory_lock($1, 0)", JOBS) and not self._jobs:
            self._jobs = True
            self._metrics.jobs_held.set(1)
            self._metrics.takeovers.labels("jobs").inc()
        return self._jobs

    @property
    def holds_jobs(self) -> bool:
        return self._jobs

    # Liveness ------------------------------------------------------------------------------

    async def live_workers(self) -> set[int]:
        """The worker keys of every process holding its liveness lock now."""
        async with self._lock:
            conn = self._conn
            if conn is None or conn.is_closed():
                raise ConnectionError("the lease connection is down")
            try:
                rows = await conn.fetch(_LIVE_WORKERS, WORKER)
            except Exception as e:
                self._drop(conn, f"{type(e).__name__}: {e}")
                raise ConnectionError("the lease connection is down") from e
        return {int(row["objid"]) for row in rows}

    async def look_at_peers(self) -> None:
        """Look again at which processes are alive, for `prefers`."""
        self._peers = frozenset(await self.live_workers())

    def prefers(self, room_id: str) -> bool:
        """Whether this process is the one to go for the room when woken (the module's
        docstring): true when it ranks first among the live processes, or knows of none."""
        if self.key not in self._peers:
            return True  # not looked yet, or the connection is down: the lock decides
        return preferred(room_id, self._peers) == self.key

    async def close(self) -> None:
        """Release everything (closing the connection drops its locks)."""
        self._closed = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            await asyncio.gather(self._reconnecting, return_exceptions=True)
        conn, self._conn = self._conn, None
        self._rooms.clear()
        self._jobs = False
        self.held.clear()
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), 5)
            except (OSError, TimeoutError, asyncpg.InterfaceError):
                conn.terminate()
