"""What a tool run uses of the bot's Context (bot.context.Context has all of it, and passes as
one), so that tools, their registry and the flows that run them need not import the Context's
module."""

from __future__ import annotations

import asyncio
from typing import Protocol

from bot.blueprints import BlueprintStore
from bot.composio.client import ComposioClient
from bot.core.replies import SentEventStore
from bot.followups.store import FollowupStore
from bot.history.store import HistoryStore
from bot.memory import Memory
from bot.tasklist.store import TaskStore
from bot.workspaces.context import WorkspacesContext


class ToolContext(WorkspacesContext, Protocol):
    @property
    def history(self) -> HistoryStore: ...

    @property
    def sent(self) -> SentEventStore:
        """What the bot sent, by transaction ID (bot.core.replies)."""
        ...

    @property
    def tasklist(self) -> TaskStore: ...

    @property
    def followups(self) -> FollowupStore: ...

    @property
    def followup_wakeup(self) -> asyncio.Event:
        """Set when a reminder is added, so that the reminder loop looks again."""
        ...

    @property
    def memory(self) -> Memory | None: ...

    @property
    def composio(self) -> ComposioClient | None: ...

    @property
    def blueprints(self) -> BlueprintStore: ...
