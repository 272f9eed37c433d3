"""Scripted replies for the fake LLM servers (tests/fakes/openai_server.py, anthropic_server.py).

A test queues what the next requests get, in order; each fake renders a reply in its own wire
format (JSON, or SSE when the request asked to stream):

    server.script(
        Error(429, retry_after=0.1),                        # HTTP 429 with a retry-after header
        Answer("Hello there", usage=Tokens(12, 3)),         # text, word by word when streamed
        Answer(tool_calls=[Call("create_task", {"title": "x"})]),   # a tool call, in fragments
        Answer("slow", first_delay=2),                      # headers, then 2 s before a token
        Answer("cut", stall_after=1),                       # one chunk, then nothing
        Hang(),                                             # no answer at all (until cancelled)
    )

With the queue empty the server answers `server.default` (None: HTTP 500 "no scripted reply",
so that a test that forgot a reply fails loudly). Every request is kept in `server.requests`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Tokens:
    """Usage to report. `input` counts cached tokens too (OpenAI's way); the Anthropic fake
    reports `input - cached` as input_tokens and `cached` as cache_read_input_tokens."""

    input: int
    output: int
    cached: int = 0


@dataclass(frozen=True, slots=True)
class Call:
    """A tool call to answer with. `arguments` may be a mapping or a raw JSON string."""

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    id: str | None = None

    @property
    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(dict(self.arguments))


@dataclass(frozen=True, slots=True)
class Answer:
    """A successful reply: text, tool calls, or both."""

    text: str = ""
    tool_calls: Sequence[Call] = ()
    usage: Tokens | None = None
    """None: made up from the request's and the answer's lengths."""
    chunks: Sequence[str] | None = None
    """How a stream splits the text (None: word by word)."""
    argument_chunk: int = 7
    """Streamed tool-call arguments come in fragments of this many characters."""
    finish_reason: str | None = None
    """None: "stop"/"end_turn", or "tool_calls"/"tool_use" when there are tool calls."""
    first_delay: float = 0
    """Seconds before the first token (a stream has sent its headers by then)."""
    chunk_delay: float = 0
    """Seconds between streamed chunks."""
    stall_after: int | None = None
    """Streams: after this many text chunks, send nothing more (the connection stays open)."""
    model: str | None = None
    """The model named in the reply (None: the requested one)."""

    def text_chunks(self) -> list[str]:
        if self.chunks is not None:
            return list(self.chunks)
        words = self.text.split(" ")
        return [w if i == 0 else " " + w for i, w in enumerate(words) if w or i == 0]

    def argument_chunks(self, call: Call) -> list[str]:
        raw = call.arguments_json
        size = max(1, self.argument_chunk)
        return [raw[i : i + size] for i in range(0, len(raw), size)] or [""]


@dataclass(frozen=True, slots=True)
class Error:
    """An HTTP error with the provider's error body."""

    status: int = 500
    message: str = "internal error"
    retry_after: float | None = None
    """Sent as a retry-after header (seconds)."""
    error_type: str | None = None
    """The body's error type (None: the usual one for the status)."""


@dataclass(frozen=True, slots=True)
class Hang:
    """No answer: the request is held for `seconds` (or until the client gives up)."""

    seconds: float = 3600


Reply = Answer | Error | Hang


def estimated_usage(answer: Answer, body: Mapping[str, Any]) -> Tokens:
    """Usage when the script does not say: about four characters a token."""
    if answer.usage is not None:
        return answer.usage
    prompt = json.dumps(body.get("messages", [])) + json.dumps(body.get("system", ""))
    output = len(answer.text) + sum(len(c.arguments_json) + len(c.name) for c in answer.tool_calls)
    return Tokens(input=max(1, len(prompt) // 4), output=max(1, output // 4))
