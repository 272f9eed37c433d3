"""What the workspace and session helpers use of the bot's Context (bot.context.Context has
all of it, and passes as one), so that they need not import the Context's module."""

from __future__ import annotations

from typing import Any, Protocol

from bot.rooms.context import RoomsContext
from bot.sessions.store import SessionStore
from bot.workspaces.store import WorkspaceStore


class WorkspacesContext(RoomsContext, Protocol):
    @property
    def workspaces(self) -> WorkspaceStore: ...

    @property
    def sessions(self) -> SessionStore: ...

    @property
    def create_events(self) -> dict[str, dict[str, Any]]:
        """Rooms' m.room.create events, by room, read once (they never change)."""
        ...
