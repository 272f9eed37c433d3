"""Doryo, assembled: database, Redis, the Matrix API, the receiver, the dispatcher; start and stop.

A process has a role (docs/deployment.md): `receiver` takes the homeserver's transactions,
journals and unpacks them, and wakes the rooms (`pg_notify`); `worker` handles rooms' events,
each room under its lease, and runs the run-once jobs when it holds their lease; `all` (the
default, and `doryo dev`) is both in one process.

Start order: the database (migrated) and Redis must be there, or start fails with a clear error.
The homeserver may come later: the bot keeps trying to reach it in the background and asks it to
deliver any backlog at once (the appservice ping) as soon as it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from mautrix.api import Method, Path
from mautrix.errors import MatrixError as MautrixError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from appservice.errors import HomeserverUnavailable, MatrixError, MatrixRequestError
from appservice.matrix import MatrixAPI
from appservice.presence import PresenceCache
from appservice.transactions import JSON, TransactionReceiver
from bot import admin, health, missed_events
from bot.actions.flow import Actions
from bot.actions.store import Action, ActionStore
from bot.agent import finished as finished_answers
from bot.agent.early import EarlyQuestions
from bot.blueprints import BlueprintStore, templates_dir
from bot.composio.client import ComposioClient
from bot.composio.recipes import recipe_tools
from bot.context import Context, Services
from bot.core import db
from bot.core.config import Config
from bot.core.dispatcher import Dispatcher
from bot.core.embedded_pg import heal_embedded, start_embedded, stop_embedded
from bot.core.errors import ConfigError, DatabaseError, DoryoError, EmbeddingError
from bot.core.inbox import Inbox, InboxStore
from bot.core.leases import LOOK_INTERVAL, Leases, notify_job, notify_rooms
from bot.core.metrics import Metrics
from bot.core.replies import SentEventStore
from bot.core.tasks import BackgroundTasks
from bot.data import deletion
from bot.documents.reader import DocumentReader
from bot.documents.store import DocumentStore
from bot.encryption import shared
from bot.encryption.device import Device
from bot.encryption.machine import Encryption
from bot.events import EventHandler, addressing, router_rules
from bot.followups import scheduler as followups
from bot.followups.store import FollowupStore
from bot.history.cleanup import NAME, forget_conversation_with_bot, forget_redacted
from bot.history.read_markers import ReadMarker, ReadMarkerStore, receipts_in
from bot.history.store import HistoryStore
from bot.letta.service import LettaService
from bot.llm import LLMRouter
from bot.memory import Embedder, LocalEmbedder, Memory
from bot.rooms.activity import Activity
from bot.rooms.members import READ_DISPLAY_NAMES, read_display_names, read_unknown_members
from bot.rooms.store import RoomStore
from bot.sessions.store import SessionStore
from bot.tasklist.store import TaskStore
from bot.tools.builtin import builtin_tools
from bot.tools.known import KnownTools
from bot.tools.registry import ToolRegistry
from bot.workspaces import retention
from bot.workspaces.store import WorkspaceStore

log = logging.getLogger(__name__)

MAINTENANCE_INTERVAL = 30.0
DELETION_RETRY = timedelta(minutes=10)
"""A workspace deletion still running this long after its confirmation is finished again (the
homeserver was away when the bot was to leave its rooms); every step of it may run twice."""
# How often workspaces that grew are given an HNSW index of their own (Memory.index_workspaces).
OWN_INDEX_INTERVAL = 600.0
INBOX_RETENTION = timedelta(days=7)
# How often the embedded PostgreSQL is checked, and started again when it died.
EMBEDDED_PG_CHECK = 5.0
# Failed restarts in a row before the process gives up and exits for its supervisor to restart.
EMBEDDED_PG_RESTARTS = 3

ROLES = ("all", "receiver", "worker")
PRESENCE_MAX_AGE = 60.0
PING_AGAIN = (1.0, 2.0, 4.0, 8.0, 16.0)
"""Seconds between the pings after the first, once connected (see `_ping_again`)."""


def check_role(config: Config, role: str) -> None:
    """What a role needs of the configuration; ConfigError naming the key if it is not so."""
    if role not in ROLES:
        raise ConfigError(f"--role: one of {', '.join(ROLES)}, not {role!r}")
    if role == "all":
        return
    if config.database.url == "embedded":
        raise ConfigError(
            f"database.url: --role {role} shares the database with other processes; "
            "give the URL of a PostgreSQL they all reach, not embedded"
        )


class Doryo:
    def __init__(
        self,
        config: Config,
        *,
        embedder: Embedder | None = None,
        role: str = "all",
        port: int | None = None,
    ) -> None:
        """`embedder`: a loaded embedding model to share (tests); default: embeddings.model.
        `port`: where this process listens (default: appservice.port; a worker, which serves
        only /health, /ready and /metrics, the next one)."""
        check_role(config, role)
        self.config = config
        self.role = role
        self.receives = role in ("all", "receiver")
        self.handles = role in ("all", "worker")
        self.port = port if port is not None else config.appservice.port + (role == "worker")
        self._embedder = embedder
        self.metrics = Metrics()
        # A worker hears no presence (the receiver does): what it asked of the homeserver is
        # asked again after a minute.
        self.presence = PresenceCache(max_age=None if role != "worker" else PRESENCE_MAX_AGE)
        self.connected = asyncio.Event()
        """Set once the homeserver answered and the bot user is set up."""
        self.gave_up = asyncio.Event()
        """Set when the bot cannot go on (`failure` says why): the process should stop and exit
        non-zero, for its supervisor to start it again."""
        self.failure: DoryoError | None = None
        self._tasks = BackgroundTasks()
        """Work that should finish (tool runs); stop() gives it a moment."""
        self._loops = BackgroundTasks()
        """Loops that run until stopped, and start-up work not worth waiting for at stop."""
        self._jobs = BackgroundTasks()
        """What runs once in the deployment, while this process holds the jobs' lease."""
        self.leases: Leases | None = None
        self._jobs_running = False
        self._runner: web.AppRunner | None = None
        self._embedded_pg: Any = None
        self._database_url = ""
        self.began: datetime
        """Database time at start: actions running since before it were cut short."""
        self.ctx: Context
        self.dispatcher: Dispatcher
        self.inbox: InboxStore
        self.sink: Inbox
        """Where the transaction endpoint puts what it receives (journal, then inbox)."""
        self.receiver: TransactionReceiver

    async def _open_database(self) -> asyncpg.Pool:
        url = self.config.database.url
        if url == "embedded":
            url, self._embedded_pg = await start_embedded(self.config.data_dir / "postgres")
        self._database_url = url
        return await db.connect(
            url,
            min_size=self.config.database.min_connections,
            max_size=self.config.database.max_connections,
            command_timeout=self.config.database.command_timeout,
        )

    async def _open_redis(self) -> Redis:
        redis = Redis.from_url(
            self.config.redis.url.get_secret_value(), socket_timeout=5, socket_connect_timeout=5
        )
        try:
            await redis.ping()
        except (RedisError, OSError) as e:
            await redis.aclose()
            raise DoryoError(
                f"cannot reach Redis at redis.url ({self.config.redis.where}): {e}"
            ) from None
        return redis

    async def start(self) -> None:
        config = self.config
        pool = await self._open_database()
        self.began = await pool.fetchval("SELECT now()")
        try:
            redis = await self._open_redis()
        except DoryoError:
            await pool.close()
            raise
        if self.handles:
            self.leases = Leases(
                self._database_url,
                self.metrics,
                on_wake=self._woken,
                on_regained=self._regained,
                on_job=self._job_woken,
                on_lost=self._leases_lost,
            )
            try:
                await self.leases.open()
            except (OSError, asyncpg.PostgresError) as e:
                await redis.aclose()
                await pool.close()
                raise DoryoError(f"cannot hold leases in the database: {e}") from None
        http = aiohttp.ClientSession(headers={"User-Agent": "Doryo/0.1"})
        # The device lives in the process that takes in the transactions (their room keys);
        # a worker uses it there.
        owned = None
        encryption: Device | None = None
        if config.encryption.enabled and self.receives:
            encryption = owned = Encryption(config, pool, http, self._database_url)
        elif config.encryption.enabled:
            encryption = shared.RemoteDevice(config, http)
        matrix = MatrixAPI(
            config.homeserver.address,
            config.appservice.as_token.get_secret_value(),
            config.bot_user_id,
            http,
            timeout=config.homeserver.request_timeout,
            crypto=encryption,
            requests=self.metrics.homeserver_requests,
        )
        tools = ToolRegistry(builtin_tools())
        router = LLMRouter.from_config(config, redis=redis, db=pool)
        blueprints = BlueprintStore(
            pool,
            resolve_model=router.catalog.resolve,
            known_tools=KnownTools(tools, config),
            letta_enabled=config.letta.enabled,
        )
        report = await blueprints.load_directory(templates_dir())
        log.info("blueprints: %s", report)
        memory = await self._open_memory(pool)
        composio = None
        if config.composio.api_key.get_secret_value():
            composio = ComposioClient(config.composio)
            for tool in recipe_tools():
                tools.register(tool)
        services = Services(
            config=config,
            db=pool,
            redis=redis,
            http=http,
            matrix=matrix,
            presence=self.presence,
            rooms=RoomStore(pool),
            sent=SentEventStore(pool),
            workspaces=WorkspaceStore(pool),
            sessions=SessionStore(pool),
            history=HistoryStore(pool),
            read_markers=ReadMarkerStore(pool),
            activity=Activity(matrix),
            inbox=InboxStore(pool),
            tools=tools,
            tasklist=TaskStore(pool),
            followups=FollowupStore(pool),
            metrics=self.metrics,
            llm=router,
            blueprints=blueprints,
            memory=memory,
            tasks=self._tasks,
            composio=composio,
            encryption=encryption,
        )
        # @act and Letta need each other: Letta proposes actions, and hears when they end. The
        # actions tell Letta through this function, which finds Letta once it is made below.
        letta: LettaService | None = None

        async def settled(action: Action, summary: str | None) -> None:
            if letta is not None:
                await letta.approvals.settled(action, summary)

        actions = Actions(
            services, ActionStore(pool), tools, on_settled=settled, leases=self.leases
        )
        if config.letta.enabled:
            letta = LettaService(services, actions, config.letta)
        early = None
        if memory is not None and config.agent.memories and self.role == "all":
            # Early embedding needs the journaling process to be the handling one.
            early = EarlyQuestions(memory, router_rules(config), addressing(config))
        documents = DocumentReader(services, DocumentStore(pool))
        self.ctx = Context.of(
            services, actions=actions, letta=letta, early_questions=early, documents=documents
        )
        self.inbox = self.ctx.inbox
        handler = EventHandler(self.ctx)
        self.dispatcher = Dispatcher(
            self.inbox,
            handler.handle,
            self.metrics,
            max_parallel_rooms=config.bot.max_parallel_rooms,
            leases=self.leases,
        )
        self.missed = missed_events.MissedEvents(self.ctx.matrix, self.inbox, self._wake)
        self.sink = Inbox(
            self.inbox,
            self._wake,
            self._on_ephemeral,
            on_journaled=self.ctx.early_questions.see if self.ctx.early_questions else None,
            crypto=owned,
        )
        self.receiver = TransactionReceiver(
            config.appservice.hs_token.get_secret_value(), self.sink, self.metrics.registry
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        if self.receives:
            self.receiver.add_routes(app)
            admin.add_routes(app, self.ctx)
        if owned is not None:
            shared.add_routes(app, owned, config)
        health.add_routes(app, self.ctx, self.leases)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, config.appservice.hostname, self.port)
        try:
            await site.start()
        except OSError as e:
            await self._close_clients()
            where = "appservice.hostname/port" if self.receives else "--port"
            raise DoryoError(
                f"cannot listen on {config.appservice.hostname}:{self.port} ({where}): {e}"
            ) from None
        if self.receives:
            await self.sink.unpack()  # transactions acked just before the last stop
            self._loops.spawn(self._unpack_now_and_then(), "unpack the journal now and then")
        if self.handles:
            resumed = await self.dispatcher.resume()
            if resumed:
                log.info("resuming %d rooms with events left from the last run", resumed)
            self._loops.spawn(self._look(), "look for rooms and jobs")
        self._loops.spawn(self._connect_homeserver(), "connect to the homeserver")
        if self._embedded_pg is not None:
            self._loops.spawn(self._keep_embedded_pg(), "keep the embedded PostgreSQL running")
        log.info(
            "listening on %s:%d as %s (role %s%s)",
            config.appservice.hostname,
            self.port,
            config.bot_user_id,
            self.role,
            f", worker key {self.leases.key}" if self.leases is not None else "",
        )

    def _wake(self, room_ids: Sequence[str]) -> None:
        """These rooms have new events: this process's rooms' workers, if it handles events,
        and every process's, through the database."""
        if self.handles:
            self._woken(room_ids)
        self._loops.spawn(self._notify(room_ids), "wake the rooms in every process")

    async def _notify(self, room_ids: Sequence[str]) -> None:
        try:
            await notify_rooms(self.ctx.db, room_ids)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as e:
            # The others find the rooms within LOOK_INTERVAL all the same.
            log.warning("could not wake the rooms in other processes: %s", e)

    def _woken(self, room_ids: Sequence[str]) -> None:
        """Go for the rooms this process is the one to take (bot.core.leases); the others'
        are taken by their process, or by anyone's next look if it is gone."""
        if self.leases is None:
            self.dispatcher.wake(room_ids)
            return
        mine: list[str] = []
        others: list[str] = []
        for room in room_ids:
            (mine if self.leases.prefers(room) else others).append(room)
        self.dispatcher.wake(mine)
        self.dispatcher.nudge(others)

    def _regained(self) -> None:
        """The lease connection is back, without its claims: look at once for pending rooms;
        the jobs are taken again by whoever looks first."""
        self._loops.spawn(self.dispatcher.resume(), "resume rooms after the lease came back")
        self._loops.spawn(self._start_jobs_if_free(), "take the jobs after the lease came back")

    def _leases_lost(self) -> None:
        """Another process may take the jobs from now on: stop them here at once."""
        if self._jobs_running:
            log.warning("the jobs' lease was lost; stopping them here")
            self._jobs_running = False
            # Cancelled now, not by a task started for it: jobs taken again before that task
            # ran would be cancelled with the old ones.
            self._jobs.cancel_all()

    def _job_wakeups(self) -> dict[str, asyncio.Event]:
        """What wakes each run-once job's loop: set by whichever process has work for it."""
        return {
            "reminders": self.ctx.followup_wakeup,
            "documents": self.ctx.documents.queued,
            missed_events.HOMESERVER_OUTAGE: self.ctx.matrix.unreachable,
        }

    def _job_woken(self, name: str) -> None:
        event = self._job_wakeups().get(name)
        if event is not None:
            event.set()

    async def _look(self) -> None:
        """Every LOOK_INTERVAL: rooms with pending events that no process works on (another
        died, or a wake-up was missed) are taken; the jobs are taken if no process holds them,
        and given up when the lease was lost; a reminder added or a file queued here is
        announced to the process that runs the jobs."""
        assert self.leases is not None
        while True:
            try:
                with contextlib.suppress(ConnectionError):  # down: reconnecting meanwhile
                    await self.leases.look_at_peers()
                # First: it needs only the lease connection, which may be back before the pool.
                started = await self._start_jobs_if_free()
                await self.dispatcher.resume()
                self.metrics.inbox_pending.set(await self.inbox.pending_count())
                if not started and self._jobs_running:
                    await self.ctx.actions.recover(started_before=self.began)
                if not self.leases.holds_jobs:
                    for name, event in self._job_wakeups().items():
                        if event.is_set():
                            event.clear()
                            await notify_job(self.ctx.db, name)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, MatrixError) as e:
                log.warning("looking for rooms and jobs: %s", e)
            await asyncio.sleep(LOOK_INTERVAL)

    async def _unpack_now_and_then(self) -> None:
        """What the journal still holds (the database was away right after a transaction) and
        the encryption parts not taken in yet."""
        while True:
            await asyncio.sleep(MAINTENANCE_INTERVAL)
            try:
                await self.sink.unpack()
                await self.sink.take_in_crypto()
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as e:
                log.warning("unpacking the journal skipped: %s", e)

    async def _open_memory(self, pool: asyncpg.Pool) -> Memory | None:
        try:
            memory = await Memory.open(self.config, pool, embedder=self._embedder)
        except (EmbeddingError, ConfigError) as e:
            # Without memory the agent still answers from the conversation; say why loudly.
            log.error("workspace memory is off: %s", e)
            return None
        if isinstance(memory.embedder, LocalEmbedder) and self.handles:
            # Starting its workers and loading the model takes seconds: not on the first @ask.
            self._loops.spawn(self._load_model(memory.embedder), "load the embedding model")
        return memory

    async def _index_workspaces(self, memory: Memory) -> None:
        """At start, then now and then: an HNSW index of its own for each workspace that grew
        big enough (searches of it stay fast whatever the other workspaces hold)."""
        while True:
            try:
                await memory.index_workspaces()  # logs what it builds and drops
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as e:
                log.warning("memory: building the workspaces' own indexes failed: %s", e)
            await asyncio.sleep(OWN_INDEX_INTERVAL)

    async def _keep_embedded_pg(self) -> None:
        """The bot owns the embedded PostgreSQL: when it dies, start it again (the events wait
        in the homeserver and the inbox meanwhile). If it cannot be started, exit: a supervisor
        sees a dead process, never one that only says in /ready that it has no database."""
        failures = 0
        while True:
            await asyncio.sleep(EMBEDDED_PG_CHECK)
            try:
                dead = await heal_embedded(self._embedded_pg)
            except DatabaseError as e:
                failures += 1
                log.error("%s (%d of %d tries)", e, failures, EMBEDDED_PG_RESTARTS)
                if failures >= EMBEDDED_PG_RESTARTS:
                    self.failure = e
                    self.gave_up.set()
                    return
                continue
            failures = 0
            if dead is not None:
                log.warning("the embedded PostgreSQL had stopped (pid %s); started it again", dead)
                self.metrics.errors.labels("database").inc()

    async def _load_model(self, embedder: LocalEmbedder) -> None:
        try:
            await embedder.load()
        except EmbeddingError as e:
            log.error("the embedding model could not be loaded: %s", e)

    async def _on_ephemeral(self, events: Sequence[JSON]) -> None:
        receipts: list[ReadMarker] = []
        for event in events:
            if event.get("type") == "m.presence":
                await self.presence.update(event)
            elif event.get("type") == "m.receipt":
                receipts += receipts_in(event)
        # Only people's: the bot's own receipts and its agents' say nothing of anyone's reading.
        people = [r for r in receipts if not self.ctx.namespace.match(r.user_id)]
        await self.ctx.read_markers.record(people)

    async def _connect_homeserver(self) -> None:
        """Set up the bot user and ask for the backlog, retrying until the homeserver answers."""
        delay = 0.5
        while True:
            try:
                await self._set_up_bot_user()
                duration = await self.ctx.matrix.ping_appservice(self.config.appservice.id)
                break
            except HomeserverUnavailable as e:
                log.warning("homeserver not reachable yet (%s); retrying in %.0f s", e, delay)
            except MatrixRequestError as e:
                log.error(
                    "the homeserver refused the appservice (%s); is the registration loaded "
                    "and are the tokens the same? Retrying in %.0f s",
                    e,
                    delay,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30)
        if self.ctx.encryption is not None and not await self._start_encryption():
            return
        self.connected.set()
        log.info(
            "connected to %s (appservice ping %.0f ms)", self.config.homeserver.address, duration
        )
        if self.receives:
            self._loops.spawn(self._ping_again(), "ping the homeserver again after the start")
        if self.leases is not None:
            # At once rather than at the next look: what a crash left waits for this.
            await self._start_jobs_if_free()

    async def _ping_again(self) -> None:
        """Synapse backs off from an appservice it could not reach (up to 8.5 min between
        tries), and a ping makes it retry at once. The first ping's retry can fail too: after a
        restart on the same port, Synapse may send it on a connection to the process before,
        which is gone, and back off further (seen: 32 s). A few more pings soon after the start
        end that wait; when Synapse is not backing off, each is one round trip."""
        for delay in PING_AGAIN:
            await asyncio.sleep(delay)
            try:
                await self.ctx.matrix.ping_appservice(self.config.appservice.id)
            except (HomeserverUnavailable, MatrixRequestError) as e:
                log.debug("ping after the start: %s", e)

    async def _start_jobs_if_free(self) -> bool:
        """Take the run-once jobs if no process holds them and start them here; True if they
        were started now (not when they already ran here, or another process holds them)."""
        assert self.leases is not None
        if not self.connected.is_set() or not await self.leases.take_jobs():
            return False
        if self._jobs_running:
            return False
        self._jobs_running = True
        log.info("this process runs the deployment's run-once jobs")
        self._jobs.spawn(self._run_jobs(), "run-once jobs")
        return True

    async def _run_jobs(self) -> None:
        """What must run once in the deployment (docs/architecture.md says how each stays
        once): recovery of what a crash cut short, then the loops, until the lease is lost."""
        try:
            await self.ctx.actions.recover(started_before=self.began)
            await deletion.recover(self.ctx, decided_before=self.began)
        except (
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            OSError,
            DatabaseError,
            MatrixError,
        ) as e:
            # Both are tried again: actions at each look, deletions by the maintenance.
            log.warning("recovering what a crash cut short: %s; trying again soon", e)
        # Rooms joined before the bot kept their members are no DMs until it has read them.
        self._jobs.spawn(read_unknown_members(self.ctx), "read rooms' members")
        self._jobs.spawn(read_display_names(self.ctx), READ_DISPLAY_NAMES)
        if self.ctx.letta is not None:
            self._jobs.spawn(self.ctx.letta.approvals.recover(), "Letta outcomes not sent yet")
        self._jobs.spawn(followups.run(self.ctx, self.ctx.followup_wakeup), "reminders")
        if self.ctx.memory is not None:
            self._jobs.spawn(self.ctx.documents.run(), "documents")
            self._jobs.spawn(self._index_workspaces(self.ctx.memory), "workspace memory indexes")
        self._jobs.spawn(self.missed.watch(), "catch up after homeserver outages")
        self._jobs.spawn(self._maintenance(), "maintenance")
        self._jobs.spawn(forget_redacted(self.ctx), "memory: forget redacted messages")
        self._jobs.spawn(self._retention(), "retention")
        self._jobs.spawn(forget_conversation_with_bot(self.ctx), NAME)

    async def _start_encryption(self) -> bool:
        """The bot's device, ready to encrypt and decrypt; False if it cannot be (the process
        gives up: a homeserver without what encryption needs is a configuration error)."""
        assert self.ctx.encryption is not None
        delay = 0.5
        while True:
            try:
                await self.ctx.encryption.start(nudge=self._nudge_delivery)
                break
            except ConfigError as e:
                log.error("encryption: %s", e)
                self.failure = e
                self.gave_up.set()
                return False
            except (
                HomeserverUnavailable,
                MautrixError,
                aiohttp.ClientError,
                OSError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
            ) as e:
                log.warning("encryption: setting up the device failed (%s); retrying", e)
                await self.ctx.encryption.stop()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30)
        await self.sink.take_in_crypto()  # what arrived while the device was not ready
        return True

    async def _nudge_delivery(self) -> None:
        await self.ctx.matrix.nudge_appservice(self.config.appservice.id)

    async def _set_up_bot_user(self) -> None:
        matrix = self.ctx.matrix
        await matrix.ensure_registered()
        profile = await matrix.request(Method.GET, Path.v3.profile[matrix.user_id])
        if profile.get("displayname") != self.config.appservice.bot_displayname:
            await matrix.set_displayname(self.config.appservice.bot_displayname)
        await matrix.set_presence_no_fail("online")

    async def _maintenance(self) -> None:
        """Now and then: expire and report actions, finish deletions, catch up on events the
        homeserver never pushed, and prune old records."""
        while True:
            await asyncio.sleep(MAINTENANCE_INTERVAL)
            try:
                expired = await self.ctx.actions.expire_due()
                if expired:
                    log.info("%d actions expired without confirmation", expired)
                await deletion.expire_due(self.ctx)
                # Deletions whose rooms the homeserver's absence kept the bot in.
                await deletion.recover(self.ctx, datetime.now(UTC) - DELETION_RETRY)
                # Ends not on their cards yet (the homeserver was away when they came).
                await self.ctx.actions.report_pending(datetime.now(UTC) - timedelta(minutes=1))
                await finished_answers.prune(self.ctx.db)
                pruned = await self.inbox.prune(INBOX_RETENTION)
                await self.ctx.sent.prune(INBOX_RETENTION)
                if pruned:
                    log.info("pruned %d handled events older than %s", pruned, INBOX_RETENTION)
                # Last: the homeserver away (its pages) must not hold up the pruning.
                await self.missed.recent_rooms(
                    missed_events.ROUTINE, settled=missed_events.ROUTINE_SETTLED
                )
            except (asyncpg.PostgresError, OSError, DatabaseError, MatrixError) as e:
                log.warning("maintenance skipped: %s", e)

    async def _retention(self) -> None:
        """Each workspace's messages older than its retention deleted, once an hour (a minute
        after start: not while the bot catches up)."""
        await asyncio.sleep(60)
        while True:
            try:
                await retention.apply_all(self.ctx)
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as e:
                log.warning("retention skipped: %s", e)
            await asyncio.sleep(retention.INTERVAL)

    async def idle(self, timeout: float) -> None:
        """Wait until every event received so far has been handled (for tests and benchmarks)."""
        async with asyncio.timeout(timeout):
            await self.sink.settled()
            await self.dispatcher.idle(timeout)

    async def stop(self) -> None:
        """Stop taking transactions, let handlers finish (briefly), then close everything."""
        if self._runner is not None:
            await self._runner.cleanup()  # the homeserver keeps what it could not deliver
            self._runner = None
            await self.sink.settled()
        await self.dispatcher.stop(timeout=10)
        await self._jobs.cancel_all()
        await self._loops.cancel_all()
        if not await self._tasks.wait(timeout=10):
            log.warning("stopping: cancelling %d tool runs still going", len(self._tasks))
        await self._tasks.cancel_all()
        await self.ctx.activity.close()
        if self.connected.is_set():
            await self.ctx.matrix.set_presence_no_fail("offline")
        if self.ctx.encryption is not None:
            await self.ctx.encryption.stop()
        await self._close_clients()

    async def _close_clients(self) -> None:
        if self.ctx.early_questions is not None:
            self.ctx.early_questions.close()
        if self.ctx.memory is not None:
            await self.ctx.memory.close()
        if self.ctx.letta is not None:
            await self.ctx.letta.close()
        await self.ctx.llm.close()
        await self.ctx.http.close()
        if self.ctx.composio is not None:
            await self.ctx.composio.close()
        await self.ctx.redis.aclose()
        if self.leases is not None:
            await self.leases.close()
        await self.ctx.db.close()
        if self._embedded_pg is not None:
            await stop_embedded(self._embedded_pg)
            self._embedded_pg = None
