"""The one object handed to everything that does I/O: config, pools, clients and stores.

Built once, in one go, by bot.app.Doryo (`Services` first: what needs no other feature; then the
features that need those — Actions, LettaService — and the finished `Context`). Immutable (its
fields are set once; the objects in them keep their own state), passed explicitly, never reached
through a global. Features take a protocol of what they use of it (bot.rooms.context,
bot.workspaces.context, bot.tools.context, …), which it satisfies.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg
from redis.asyncio import Redis

from appservice.matrix import MatrixAPI
from appservice.presence import PresenceCache
from bot.actions.flow import Actions
from bot.blueprints import BlueprintStore
from bot.composio.client import ComposioClient
from bot.core.config import Config
from bot.core.inbox import InboxStore
from bot.core.metrics import Metrics
from bot.core.replies import SentEventStore
from bot.core.tasks import BackgroundTasks
from bot.documents.reader import DocumentReader
from bot.encryption.device import Device
from bot.followups.store import FollowupStore
from bot.history.read_markers import ReadMarkerStore
from bot.history.store import HistoryStore
from bot.llm import LLMRouter
from bot.memory import Memory
from bot.rooms.activity import Activity
from bot.rooms.store import RoomStore
from bot.sessions.store import SessionStore
from bot.tasklist.store import TaskStore
from bot.tools.registry import ToolRegistry
from bot.workspaces.store import WorkspaceStore

if TYPE_CHECKING:
    from bot.agent.early import EarlyQuestions
    from bot.letta.service import LettaService


@dataclass(frozen=True, kw_only=True)
class Services:
    """What a feature may use that needs no other feature: the Context but for @act, Letta and
    the early @ask questions (which are built on it)."""

    config: Config
    db: asyncpg.Pool
    redis: Redis
    http: aiohttp.ClientSession
    matrix: MatrixAPI
    """The homeserver API as the bot user."""
    presence: PresenceCache
    rooms: RoomStore
    sent: SentEventStore
    """What the bot sent, by transaction ID (bot.core.replies)."""
    workspaces: WorkspaceStore
    sessions: SessionStore
    history: HistoryStore
    read_markers: ReadMarkerStore
    """Where each person last read each room (their read receipts)."""
    activity: Activity
    """Typing and presence status while the bot works."""
    inbox: InboxStore
    tools: ToolRegistry
    tasklist: TaskStore
    followups: FollowupStore
    metrics: Metrics
    llm: LLMRouter
    blueprints: BlueprintStore
    memory: Memory | None
    """The workspace memory; None only when it could not be opened (see the log)."""
    tasks: BackgroundTasks = field(default_factory=BackgroundTasks)
    create_events: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Rooms' m.room.create events, by room: they never change, so they are read once."""
    followup_wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a reminder is added, so that the reminder loop looks again."""
    composio: ComposioClient | None = None
    """The Composio client; None when Composio is off (composio.api_key empty)."""
    encryption: Device | None = None
    """The bot's device for encrypted rooms (in this process, or its owner's: a worker's);
    None when encryption.enabled is false."""

    @property
    def bot_user_id(self) -> str:
        return self.config.bot_user_id

    @cached_property
    def namespace(self) -> re.Pattern[str]:
        return re.compile(self.config.user_namespace_regex)

    def redis_key(self, *parts: str) -> str:
        return self.config.redis.key_prefix + ":".join(parts)


@dataclass(frozen=True, kw_only=True)
class Context(Services):
    actions: Actions
    """@act: proposing, confirming and running actions (built on the Services)."""
    letta: LettaService | None = None
    """Letta agents (bot.letta); None when Letta is off (letta.base_url empty)."""
    early_questions: EarlyQuestions | None = None
    """@ask questions whose embedding started as they arrived; None without memory."""
    documents: DocumentReader
    """Files shared in sessions, read into memory in the background (bot.documents)."""

    @classmethod
    def of(cls, services: Services, **features: Any) -> Context:
        """The finished Context: the services and the features built on them."""
        return cls(**{f.name: getattr(services, f.name) for f in fields(services)}, **features)
