"""What the Letta agents use of the bot's Context (bot.context.Context has all of it, and passes
as one), so that the letta package need not import the Context's module, which holds it."""

from __future__ import annotations

from typing import Protocol

from bot.llm import LLMRouter
from bot.tools.permissions import PermissionsContext


class LettaContext(PermissionsContext, Protocol):
    """A tool run's view, the tool registry, and the model router (a turn's usage is recorded
    there). The actions Letta proposes come in apart: they are built beside it."""

    @property
    def llm(self) -> LLMRouter: ...
