"""The tool names a blueprint may list: every registered tool, the Composio recipes (offered
only while Composio is on), and — when Composio is on — any Composio tool slug (its schema is
fetched when a room first needs it)."""

from __future__ import annotations

from collections.abc import Collection, Iterator

from bot.composio.recipes import recipe_tools
from bot.core.config import Config
from bot.tools.permissions import COMPOSIO_SLUG
from bot.tools.registry import ToolRegistry


class KnownTools(Collection[str]):
    def __init__(self, registry: ToolRegistry, config: Config) -> None:
        self._registry = registry
        self._composio = bool(config.composio.api_key.get_secret_value())
        self._recipes = {tool.name for tool in recipe_tools()}

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return (
            name in self._registry.names()
            or name in self._recipes
            or bool(self._composio and COMPOSIO_SLUG.match(name))
        )

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._registry.names() | self._recipes))

    def __len__(self) -> int:
        return len(self._registry.names() | self._recipes)
