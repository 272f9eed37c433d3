"""The tool registry: what each tool is (name, version, description, argument schema, executor,
whether it writes), validation of arguments, and the schemas offered to models.

Tools are registered explicitly where the bot is assembled (no registration by import).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ValidationError

from bot.core import strings
from bot.core.errors import UserError
from bot.tools.context import ToolContext

if TYPE_CHECKING:
    from bot.workspaces.store import Workspace

Executor = Literal["builtin", "composio", "letta"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """What a tool run knows about its circumstances."""

    ctx: ToolContext
    workspace: Workspace
    room_id: str
    requested_by: str
    confirmed_by: str | None
    idempotency_key: str
    """The same for every attempt of one action: an idempotent tool acts once per key."""


@dataclass(frozen=True, slots=True)
class ToolResult:
    summary: str
    """Markdown for people: what was done, with links."""
    data: dict[str, Any] = field(default_factory=dict)
    """Machine-readable result, put in the card's org.doryo.action.result."""
    external_ids: list[str] = field(default_factory=list)
    """IDs and URLs of what the tool made elsewhere (audit log)."""


@functools.cache
def _parameters(args: type[BaseModel]) -> dict[str, Any]:
    """A tool's arguments as JSON schema. Made once per model: pydantic takes 0.2-0.6 ms to
    make one, and an @ask offers the schemas of every read-only tool."""
    parameters = args.model_json_schema()
    parameters.pop("title", None)
    return parameters


RunFunction = Callable[[ToolCall, Any], Awaitable[ToolResult]]
PrecheckFunction = Callable[[ToolCall, Any], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    version: str
    description: str
    args: type[BaseModel]
    run: RunFunction
    executor: Executor = "builtin"
    writes: bool = True
    """Writing tools run only after confirmation; read-only ones may run during an answer."""
    idempotent: bool = False
    """Re-running with the same idempotency key acts once: a run cut short may be finished."""
    precheck: PrecheckFunction | None = None
    """What must hold for a run to be possible at all (e.g. a linked account), checked when the
    action is proposed, before its card is posted; raises UserError saying what is missing."""

    def schema(self) -> dict[str, Any]:
        """The OpenAI-style function schema offered to models."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": copy.deepcopy(_parameters(self.args)),
            },
        }

    async def check(self, call: ToolCall, args: BaseModel) -> None:
        """Run the precheck, if any. At proposal `call.confirmed_by` is None and
        `call.idempotency_key` is empty: nothing may be done, only looked at."""
        if self.precheck is not None:
            await self.precheck(call, args)

    def validate(self, raw: dict[str, Any]) -> BaseModel:
        """Arguments checked against the schema; UserError says what is wrong, field by field."""
        try:
            return self.args.model_validate(raw)
        except ValidationError as e:
            problems = []
            for error in e.errors():
                where = ".".join(str(p) for p in error["loc"]) or "arguments"
                message = "missing" if error["type"] == "missing" else error["msg"]
                if error["type"] == "extra_forbidden":
                    message = "not an argument of this tool"
                problems.append(strings.TOOL_ARG_PROBLEM.format(field=where, problem=message))
            raise UserError(
                strings.TOOL_ARGS_INVALID.format(tool=self.name, problems="\n".join(problems))
            ) from None


class ToolRegistry:
    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.register(tool)

    def register(self, tool: Tool) -> None:
        if tool.name in self._tools:
            raise ValueError(f"tool {tool.name} is registered twice")
        self._tools[tool.name] = tool

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def names(self) -> set[str]:
        return set(self._tools)

    def all(self) -> list[Tool]:
        return sorted(self._tools.values(), key=lambda t: t.name)

    def allowed(self, names: Iterable[str] | None) -> list[Tool]:
        """The tools among `names` (None: every tool), in name order."""
        if names is None:
            return self.all()
        wanted = set(names)
        return [t for t in self.all() if t.name in wanted]
