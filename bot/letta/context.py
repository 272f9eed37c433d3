"""What the Letta agents use of the bot's Context (bot.context.Context has all of it, and passes
as one), so that the letta package need not import the Context's module, which holds it."""

from __future__ import annotations

from typing import Protocol

from bot.actions.flow import Actions
from bot.llm import LLMRouter
from bot.tools.permissions import PermissionsContext


class LettaContext(PermissionsContext, Protocol):
    @property
    def actions(self) -> Actions: ...

    @property
    def llm(self) -> LLMRouter: ...
