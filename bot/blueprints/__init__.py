"""Agent blueprints: what an agent is (model, instructions, tools, temperature, limits), kept in
PostgreSQL as immutable versions, loaded from the YAML templates under blueprints/.

- spec:  the YAML shape, `extends` merging, validation, Blueprint (and Blueprint.request, the
         router request that answers as it)
- store: BlueprintStore (create, edit, get, history, rollback, list, load_directory)
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from bot.blueprints.spec import Blueprint, BlueprintLimits, BlueprintSpec, parse_yaml
from bot.blueprints.store import BlueprintStore, LoadReport, Pin, VersionInfo

# The tools docs/spec.md §4 names (built-in and Composio recipes). The tool registry replaces this
# as the set blueprints are checked against once it exists.
SPEC_TOOLS = frozenset(
    {
        "create_task",
        "create_followup",
        "search_docs",
        "create_project",
        "summarize_channel",
        "send_notification",
        "create_github_template",
        "create_notion_itinerary",
        "create_budget_sheet",
    }
)


def templates_dir() -> Path:
    """The shipped templates: the checkout's blueprints/*.yaml, else the copy a wheel carries
    (through the bot/blueprints/yaml-templates symlink)."""
    checkout = Path(__file__).resolve().parents[2] / "blueprints"
    if checkout.is_dir():
        return checkout
    return Path(str(resources.files("bot.blueprints") / "yaml-templates"))


__all__ = [
    "SPEC_TOOLS",
    "Blueprint",
    "BlueprintLimits",
    "BlueprintSpec",
    "BlueprintStore",
    "LoadReport",
    "Pin",
    "VersionInfo",
    "parse_yaml",
    "templates_dir",
]
