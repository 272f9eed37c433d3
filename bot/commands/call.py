"""What a command handler is given."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.commands.parser import Command
from bot.core.replies import Replier

if TYPE_CHECKING:
    from bot.context import Context


@dataclass(frozen=True, slots=True)
class CommandCall:
    ctx: Context
    room_id: str
    sender: str
    event: dict[str, Any]
    command: Command
    reply: Replier
    age_ms: int
    """How long the command took to reach the bot (origin_server_ts to handling)."""


CommandHandler = Callable[[CommandCall], Awaitable[None]]
