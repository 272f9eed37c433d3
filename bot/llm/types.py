"""What goes into a model call and what comes out, the same for every provider.

Messages follow the OpenAI chat shape (system, user, assistant with tool calls, tool results);
the anthropic adapter translates. Usage counts `input_tokens` including cached ones, with
`cached_tokens` the part read from the provider's prompt cache (genai-prices counts the same way).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
Outcome = Literal["ok", "error", "timeout", "rate_limited", "cancelled"]
AtLimit = Literal["refuse", "downgrade"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the model asks for. `arguments` is the parsed JSON object ({} if it was not)."""

    id: str
    name: str
    arguments: Mapping[str, Any]
    raw_arguments: str = ""

    @classmethod
    def parse(cls, id: str, name: str, raw_arguments: str) -> ToolCall:
        try:
            parsed = json.loads(raw_arguments) if raw_arguments.strip() else {}
        except ValueError:
            parsed = {}
        if not isinstance(parsed, dict):
            parsed = {}
        return cls(id=id, name=name, arguments=parsed, raw_arguments=raw_arguments)

    @property
    def arguments_json(self) -> str:
        return self.raw_arguments or json.dumps(dict(self.arguments), separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    """Assistant messages: the tool calls the model made."""
    tool_call_id: str | None = None
    """Tool messages: which call this is the result of."""

    @classmethod
    def system(cls, content: str) -> Message:
        return cls("system", content)

    @classmethod
    def user(cls, content: str) -> Message:
        return cls("user", content)

    @classmethod
    def assistant(cls, content: str = "", tool_calls: Sequence[ToolCall] = ()) -> Message:
        return cls("assistant", content, tuple(tool_calls))

    @classmethod
    def tool_result(cls, tool_call_id: str, content: str) -> Message:
        return cls("tool", content, tool_call_id=tool_call_id)


@dataclass(frozen=True, slots=True)
class ToolSchema:
    """A tool the model may call: `parameters` is a JSON Schema object."""

    name: str
    description: str
    parameters: Mapping[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    """All prompt tokens, cached ones included."""
    output_tokens: int = 0
    cached_tokens: int = 0
    """Prompt tokens read from the provider's cache (a part of input_tokens)."""
    cache_write_tokens: int = 0
    """Prompt tokens written to the provider's cache (a part of input_tokens; Anthropic)."""

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who a call is for: recorded with its usage, and the keys of rate limits and budgets.

    Every field is an opaque string (or None when it does not apply). `agent` is usually the
    blueprint code; agent limits and budgets count per agent within a workspace.
    """

    agent: str | None = None
    blueprint_version: int | None = None
    workspace_id: str | None = None
    room_id: str | None = None
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    """Overrides of the configured rate limits and budgets for one call; None keeps the config's
    value, 0 means no limit. Workspace settings and blueprints each give one; `merged` combines
    them (the argument wins where it says something).
    """

    agent_requests_per_minute: int | None = None
    agent_tokens_per_minute: int | None = None
    workspace_requests_per_minute: int | None = None
    workspace_tokens_per_minute: int | None = None
    user_requests_per_minute: int | None = None
    user_tokens_per_minute: int | None = None
    agent_monthly_usd: Decimal | None = None
    workspace_monthly_usd: Decimal | None = None
    at_limit: AtLimit | None = None
    downgrade_model: str | None = None

    def merged(self, other: Limits | None) -> Limits:
        if other is None:
            return self
        changes = {
            f.name: getattr(other, f.name)
            for f in fields(other)
            if getattr(other, f.name) is not None
        }
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class ChatRequest:
    messages: Sequence[Message]
    model: str | None = None
    """"<provider>/<model>" or an alias; None: llm.default_model."""
    fallbacks: Sequence[str] | None = None
    """Tried in order after `model`; None: llm.fallbacks."""
    tools: Sequence[ToolSchema] = ()
    tool_choice: Literal["auto", "none", "required"] | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    context: CallContext = CallContext()
    limits: Limits | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    """One model of the chain that did not answer, and why (short, safe to show)."""

    model: str
    reason: str


@dataclass(frozen=True, slots=True)
class ChatResult:
    text: str
    tool_calls: tuple[ToolCall, ...]
    usage: Usage
    model: str
    """The "<provider>/<model>" that answered."""
    provider: str
    finish_reason: str | None
    latency_ms: int
    ttft_ms: int | None
    """Time to the first streamed token (None for calls that did not stream)."""
    cost_usd: Decimal | None
    """None: the model's price is unknown."""
    notes: tuple[str, ...] = ()
    """User-facing sentences about how the answer came about (a budget downgrade, a fallback)."""
    failures: tuple[Failure, ...] = ()
    """Models tried before the one that answered."""

    def message(self) -> Message:
        """The assistant message to put back into the conversation."""
        return Message.assistant(self.text, self.tool_calls)


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A fragment of a streamed tool call. `id` and `name` come with the first fragment of a
    call; `arguments` fragments concatenate to its JSON arguments. The final ChatResult holds
    the assembled calls."""

    index: int
    id: str | None
    name: str | None
    arguments: str


StreamEvent = TextDelta | ToolCallDelta | ChatResult
