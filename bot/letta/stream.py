"""Letta's messages folded into what a turn produced. Pure: events in, state out.

A streamed turn (`streaming=True, stream_tokens=True`) sends LettaStreamingResponse items, each
with a `message_type`: `assistant_message` fragments (the same `id` for one message; its
`content` a string or text parts), `approval_request_message` for client-side tool calls (with
token streaming in fragments: the first names the call and its ID, the rest add argument text),
`reasoning_message`, `tool_call_message`/`tool_return_message` for the server's own tools,
`ping`, `error_message`, then `stop_reason` and `usage_statistics`. A JSON response
(LettaResponse) holds the same messages, a `stop_reason` and a `usage`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from bot.llm import Usage


@dataclass
class PendingCall:
    """A client-side tool call Letta asks Doryo to run."""

    tool_call_id: str
    name: str = ""
    raw_arguments: str = ""

    @property
    def arguments(self) -> dict[str, Any]:
        """The parsed arguments ({} if they are not a JSON object)."""
        try:
            parsed = json.loads(self.raw_arguments) if self.raw_arguments.strip() else {}
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(_get(part, "text") or "") for part in content)
    return ""


def _get(item: Any, name: str) -> Any:
    if isinstance(item, dict):
        return item.get(name)
    return getattr(item, name, None)


@dataclass
class TurnState:
    text: str = ""
    calls: dict[str, PendingCall] = field(default_factory=dict)
    """By tool call ID, in the order Letta asked."""
    request_message_id: str | None = None
    """The approval_request_message's ID."""
    stop_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    error: str | None = None
    _assistant_id: str | None = None
    _call_id: str | None = None

    def add(self, event: Any) -> str:
        """Take one message in; returns the text it adds to the answer ("" if none)."""
        kind = _get(event, "message_type")
        if kind == "assistant_message":
            return self._assistant(event)
        if kind == "approval_request_message":
            self._approval(event)
        elif kind == "stop_reason":
            self.stop_reason = str(_get(event, "stop_reason"))
        elif kind == "usage_statistics":
            self._usage(event)
        elif kind == "error_message":
            detail = _get(event, "detail") or _get(event, "message") or "error"
            self.error = str(detail)[:300]
        return ""

    def add_response(self, response: Any) -> str:
        """A whole LettaResponse (a request without streaming)."""
        added = "".join(self.add(m) for m in _get(response, "messages") or [])
        stop = _get(response, "stop_reason")
        if stop is not None:
            self.stop_reason = str(_get(stop, "stop_reason"))
        usage = _get(response, "usage")
        if usage is not None:
            self._usage(usage)
        return added

    @property
    def requires_approval(self) -> bool:
        return self.stop_reason == "requires_approval" and bool(self.calls)

    def _assistant(self, event: Any) -> str:
        piece = _text(_get(event, "content"))
        message_id = _get(event, "id")
        added = piece
        if message_id != self._assistant_id and self.text.strip() and piece:
            added = "\n\n" + piece  # a second message of the turn: a new paragraph
        self._assistant_id = message_id
        self.text += added
        return added

    def _approval(self, event: Any) -> None:
        self.request_message_id = self.request_message_id or _get(event, "id")
        many = _get(event, "tool_calls")
        calls = many if isinstance(many, list) and many else [_get(event, "tool_call")]
        for call in calls:
            if call is None:
                continue
            call_id = _get(call, "tool_call_id") or self._call_id
            if not call_id:
                continue
            pending = self.calls.setdefault(call_id, PendingCall(call_id))
            pending.name = _get(call, "name") or pending.name
            pending.raw_arguments += _get(call, "arguments") or ""
            self._call_id = call_id

    def _usage(self, event: Any) -> None:
        def n(name: str) -> int:
            value = _get(event, name)
            return int(value) if isinstance(value, int) else 0

        self.usage = Usage(
            input_tokens=self.usage.input_tokens + n("prompt_tokens"),
            output_tokens=self.usage.output_tokens + n("completion_tokens"),
            cached_tokens=self.usage.cached_tokens + n("cached_input_tokens"),
            cache_write_tokens=self.usage.cache_write_tokens + n("cache_write_tokens"),
        )
