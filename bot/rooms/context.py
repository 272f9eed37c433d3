"""What the room helpers use of the bot's Context: bot.context.Context has all of it, and passes
as one; the helpers need not know the rest, nor import the Context's module (which imports the
features that use them)."""

from __future__ import annotations

import re
from typing import Protocol

import asyncpg

from appservice.matrix import MatrixAPI
from appservice.presence import PresenceCache
from bot.core.config import Config
from bot.rooms.store import RoomStore


class RoomsContext(Protocol):
    @property
    def config(self) -> Config: ...

    @property
    def db(self) -> asyncpg.Pool: ...

    @property
    def matrix(self) -> MatrixAPI: ...

    @property
    def presence(self) -> PresenceCache: ...

    @property
    def rooms(self) -> RoomStore: ...

    @property
    def bot_user_id(self) -> str: ...

    @property
    def namespace(self) -> re.Pattern[str]: ...
