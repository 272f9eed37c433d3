"""Which tools the agent of a room may use: those its blueprint lists (docs/spec.md §4).

A Composio tool a blueprint names by its slug (GITHUB_CREATE_AN_ISSUE) is registered the first
time it is needed, with its schema fetched from Composio.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Protocol

from bot.agent.choice import blueprint_for
from bot.core.errors import UserError
from bot.tools.context import ToolContext
from bot.tools.registry import ToolRegistry
from bot.workspaces.store import Workspace

if TYPE_CHECKING:
    from bot.blueprints import Blueprint

log = logging.getLogger(__name__)


class PermissionsContext(ToolContext, Protocol):
    """A tool run's view of the Context, and the registry the tools are found in."""

    @property
    def tools(self) -> ToolRegistry: ...


COMPOSIO_SLUG = re.compile(r"^[A-Z][A-Z0-9]*_[A-Z0-9_]+$")


async def allowed_tools(
    ctx: PermissionsContext,
    room_id: str,
    workspace: Workspace,
    blueprint: Blueprint | None = None,
) -> set[str]:
    """The names of the tools the agent answering in this room may use (`blueprint`: the one
    answering there, if the caller has it already)."""
    if blueprint is None:
        blueprint = await blueprint_for(ctx.blueprints, workspace, await ctx.sessions.get(room_id))
    names = set(blueprint.tools)
    missing = [n for n in names if ctx.tools.get(n) is None and COMPOSIO_SLUG.match(n)]
    if missing and ctx.composio is not None:
        from bot.composio.tools import composio_tools

        try:
            for tool in await composio_tools(ctx, missing):
                if ctx.tools.get(tool.name) is None:
                    ctx.tools.register(tool)
        except UserError as e:
            log.warning("could not load Composio tools %s: %s", missing, e)
    return {n for n in names if ctx.tools.get(n) is not None}
