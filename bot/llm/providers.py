"""Providers: the official SDKs, unchanged and pointed at `base_url`, behind one small interface.

kind openai    → openai.AsyncOpenAI (OpenAI, DeepSeek, Ollama, vLLM, llama.cpp, any compatible URL)
kind anthropic → anthropic.AsyncAnthropic

Each adapter translates the normalized messages and tools into its wire shape, assembles
streamed text and tool calls, normalizes usage, and turns SDK exceptions into ProviderError
(retryable or not, with the provider's retry-after). The SDKs' own retries are off: the router
retries, so that it can fall back and keep its circuit breakers honest.

Each SDK's HTTP client carries the router's gate (bot.llm.gate): a request waits there for the
call's rate-limit check just before it leaves; a refusal comes out of the adapter as itself.
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, cast
from urllib.parse import urlsplit

import anthropic
import openai

from bot.core.config import ProviderConfig
from bot.core.errors import ProviderError, UserError
from bot.llm.gate import ProviderGate
from bot.llm.types import Message, TextDelta, ToolCall, ToolCallDelta, ToolSchema, Usage

OPENAI_URL = "https://api.openai.com/v1"
ANTHROPIC_URL = "https://api.anthropic.com"
# The SDKs refuse to start without a key; local servers (Ollama, vLLM) ignore whatever comes.
NO_KEY = "no-key"
ANTHROPIC_DEFAULT_MAX_TOKENS = 4096


@dataclass(frozen=True, slots=True)
class ProviderCall:
    """One request to one provider, in the normalized shape; `model` is the provider's name."""

    model: str
    messages: Sequence[Message]
    tools: Sequence[ToolSchema] = ()
    tool_choice: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    """What a provider answered: the end of a stream, or a whole non-streamed reply."""

    text: str
    tool_calls: tuple[ToolCall, ...]
    usage: Usage
    finish_reason: str | None


ProviderEvent = TextDelta | ToolCallDelta | Completion


@dataclass(frozen=True, slots=True)
class Timeouts:
    total: float
    connect: float


def is_local_url(base_url: str) -> bool:
    """Loopback, private and link-local addresses, and localhost, are local."""
    host = urlsplit(base_url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """The wait a provider asks for: retry-after-ms, or retry-after in seconds or as a date."""
    if not headers:
        return None
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _status_message(body: object, fallback: str) -> str:
    """The provider's own error message, from either SDK's error body shape."""
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(body.get("message"), str):
            return str(body["message"])
    return fallback


def raise_sdk_error(error: Exception) -> NoReturn:
    """An SDK exception as a ProviderError, or the gate's refusal as itself."""
    refusal = error.__cause__ if isinstance(error.__cause__, UserError) else None
    if refusal is not None:
        raise refusal from None
    raise provider_error(error) from error


_STATUS_ERRORS = (openai.APIStatusError, anthropic.APIStatusError)
_TIMEOUT_ERRORS = (openai.APITimeoutError, anthropic.APITimeoutError)
_CONNECTION_ERRORS = (openai.APIConnectionError, anthropic.APIConnectionError)
_API_ERRORS = (openai.APIError, anthropic.APIError)
SDK_ERRORS = (openai.OpenAIError, anthropic.AnthropicError)


def provider_error(error: Exception) -> ProviderError:
    """An SDK exception as a ProviderError: retryable for 408, 409, 429, 5xx, timeouts and lost
    connections; not for the rest (bad request, bad key, unknown model)."""
    if isinstance(error, _STATUS_ERRORS):
        status = error.status_code
        message = _short(_status_message(error.body, error.message))
        headers = cast(Mapping[str, str], error.response.headers)
        retry_after = retry_after_seconds(headers)
        if status == 429:
            return ProviderError(
                f"rate limited (HTTP 429): {message}",
                retryable=True,
                kind="rate limited",
                retry_after=retry_after,
                status=status,
            )
        if status < 400:
            # An error event inside a streamed 200 (Anthropic: overloaded_error mid-stream).
            return ProviderError(f"stream error: {message}", retryable=True, kind="stream error")
        retryable = status in (408, 409) or status >= 500
        return ProviderError(
            f"HTTP {status}: {message}",
            retryable=retryable,
            kind=f"HTTP {status}",
            retry_after=retry_after if retryable else None,
            status=status,
        )
    if isinstance(error, _TIMEOUT_ERRORS):
        return ProviderError("timed out", retryable=True, kind="timed out", timeout=True)
    if isinstance(error, _CONNECTION_ERRORS):
        cause = error.__cause__
        detail = f": {_short(str(cause), 80)}" if cause else ""
        return ProviderError(f"connection failed{detail}", retryable=True, kind="unreachable")
    if isinstance(error, _API_ERRORS):
        # An error event in the middle of a stream (e.g. overloaded): worth another try.
        return ProviderError(_short(error.message), retryable=True, kind="stream error")
    return ProviderError(_short(str(error)) or type(error).__name__, retryable=False)


class Provider(ABC):
    """One configured provider. Subclasses wrap one SDK client."""

    kind: str

    def __init__(
        self, name: str, config: ProviderConfig, timeouts: Timeouts, gate: ProviderGate
    ) -> None:
        self.name = name
        self.config = config
        self.base_url = config.base_url or self.default_url
        self.local = config.local if config.local is not None else is_local_url(self.base_url)
        self.timeouts = timeouts

    @property
    @abstractmethod
    def default_url(self) -> str: ...

    @abstractmethod
    async def complete(self, call: ProviderCall) -> Completion:
        """One whole reply. Raises ProviderError."""

    @abstractmethod
    def stream(self, call: ProviderCall) -> AsyncGenerator[ProviderEvent, None]:
        """Text and tool-call deltas as they come, then one Completion. Raises ProviderError."""

    @abstractmethod
    async def list_models(self) -> list[str]:
        """The models the provider offers (its /models endpoint)."""

    @abstractmethod
    async def close(self) -> None: ...

    def _api_key(self) -> str:
        return self.config.api_key.get_secret_value() or NO_KEY


def create_provider(
    name: str, config: ProviderConfig, timeouts: Timeouts, gate: ProviderGate
) -> Provider:
    if config.kind == "anthropic":
        return AnthropicProvider(name, config, timeouts, gate)
    return OpenAIProvider(name, config, timeouts, gate)


# --- kind openai -----------------------------------------------------------------------------


def _openai_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            out.append(
                {"role": "tool", "tool_call_id": m.tool_call_id or "", "content": m.content}
            )
        elif m.role == "assistant" and m.tool_calls:
            out.append(
                {
                    "role": "assistant",
                    "content": m.content or None,
                    "tool_calls": [
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": c.arguments_json},
                        }
                        for c in m.tool_calls
                    ],
                }
            )
        else:
            out.append({"role": m.role, "content": m.content})
    return out


def _openai_tools(tools: Sequence[ToolSchema]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {
                "name": t.name,
                "description": t.description,
                "parameters": dict(t.parameters),
            },
        }
        for t in tools
    ]


def _openai_usage(usage: Any) -> Usage:
    if usage is None:
        return Usage()
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) or 0
    return Usage(
        input_tokens=usage.prompt_tokens or 0,
        output_tokens=usage.completion_tokens or 0,
        cached_tokens=cached,
    )


class OpenAIProvider(Provider):
    kind = "openai"

    def __init__(
        self, name: str, config: ProviderConfig, timeouts: Timeouts, gate: ProviderGate
    ) -> None:
        super().__init__(name, config, timeouts, gate)
        self._timeout = openai.Timeout(timeouts.total, connect=timeouts.connect)
        self.client = openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=self._api_key(),
            max_retries=0,
            timeout=self._timeout,
            http_client=openai.DefaultAsyncHttpxClient(
                timeout=self._timeout, event_hooks={"request": [gate.hook]}
            ),
        )
        # OpenAI's own API wants max_completion_tokens (its reasoning models refuse max_tokens);
        # compatible servers know max_tokens.
        self._max_tokens_key = (
            "max_completion_tokens" if self.base_url.startswith(OPENAI_URL) else "max_tokens"
        )

    @property
    def default_url(self) -> str:
        return OPENAI_URL

    def _params(self, call: ProviderCall) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": call.model,
            "messages": _openai_messages(call.messages),
            "timeout": self._timeout,
        }
        if call.tools:
            params["tools"] = _openai_tools(call.tools)
            if call.tool_choice:
                params["tool_choice"] = call.tool_choice
        if call.temperature is not None:
            params["temperature"] = call.temperature
        if call.max_tokens is not None:
            params[self._max_tokens_key] = call.max_tokens
        return params

    async def complete(self, call: ProviderCall) -> Completion:
        try:
            response = await self.client.chat.completions.create(**self._params(call))
        except SDK_ERRORS as e:
            raise_sdk_error(e)
        if not response.choices:
            raise ProviderError("the reply held no choices", retryable=True, kind="empty reply")
        choice = response.choices[0]
        calls = tuple(
            ToolCall.parse(c.id, c.function.name, c.function.arguments or "")
            for c in choice.message.tool_calls or ()
            if c.type == "function"
        )
        return Completion(
            text=choice.message.content or "",
            tool_calls=calls,
            usage=_openai_usage(response.usage),
            finish_reason=choice.finish_reason,
        )

    async def stream(self, call: ProviderCall) -> AsyncGenerator[ProviderEvent, None]:
        params = self._params(call)
        params["stream"] = True
        params["stream_options"] = {"include_usage": True}
        try:
            chunks = await self.client.chat.completions.create(**params)
        except SDK_ERRORS as e:
            raise_sdk_error(e)
        text: list[str] = []
        # index → [id, name, argument fragments]
        calls: dict[int, tuple[list[str], list[str], list[str]]] = {}
        usage = Usage()
        finish_reason: str | None = None
        try:
            async for chunk in chunks:
                if chunk.usage is not None:
                    usage = _openai_usage(chunk.usage)
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                delta = choice.delta
                if delta.content:
                    text.append(delta.content)
                    yield TextDelta(delta.content)
                for fragment in delta.tool_calls or ():
                    ids, names, args = calls.setdefault(fragment.index, ([], [], []))
                    function = fragment.function
                    name = function.name if function is not None else None
                    arguments = (function.arguments if function is not None else None) or ""
                    if fragment.id and not ids:
                        ids.append(fragment.id)
                    if name and not names:
                        names.append(name)
                    args.append(arguments)
                    yield ToolCallDelta(fragment.index, fragment.id, name, arguments)
                if choice.finish_reason:
                    finish_reason = choice.finish_reason
        except SDK_ERRORS as e:
            raise_sdk_error(e)
        finally:
            await chunks.close()
        tool_calls = tuple(
            ToolCall.parse(ids[0] if ids else f"call_{i}", names[0] if names else "", "".join(a))
            for i, (ids, names, a) in sorted(calls.items())
        )
        yield Completion("".join(text), tool_calls, usage, finish_reason)

    async def list_models(self) -> list[str]:
        try:
            return [m.id async for m in self.client.models.list(timeout=self._timeout)]
        except SDK_ERRORS as e:
            raise_sdk_error(e)

    async def close(self) -> None:
        await self.client.close()


# --- kind anthropic --------------------------------------------------------------------------


def _anthropic_messages(messages: Sequence[Message]) -> tuple[str, list[dict[str, Any]]]:
    """System text, and the messages with tool results as user turns (consecutive ones merged,
    as the Messages API wants turns to alternate)."""
    system: list[str] = []
    out: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})

    for m in messages:
        if m.role == "system":
            system.append(m.content)
        elif m.role == "tool":
            add(
                "user",
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": m.tool_call_id or "",
                        "content": m.content,
                    }
                ],
            )
        elif m.role == "assistant":
            blocks: list[dict[str, Any]] = []
            if m.content:
                blocks.append({"type": "text", "text": m.content})
            for c in m.tool_calls:
                blocks.append(
                    {"type": "tool_use", "id": c.id, "name": c.name, "input": dict(c.arguments)}
                )
            add("assistant", blocks or [{"type": "text", "text": ""}])
        else:
            add("user", [{"type": "text", "text": m.content}])
    return "\n\n".join(system), out


_ANTHROPIC_TOOL_CHOICE = {"auto": "auto", "required": "any", "none": "none"}


def _anthropic_usage(usage: Any, output_tokens: int | None = None) -> Usage:
    if usage is None:
        return Usage(output_tokens=output_tokens or 0)
    cached = getattr(usage, "cache_read_input_tokens", None) or 0
    written = getattr(usage, "cache_creation_input_tokens", None) or 0
    uncached = getattr(usage, "input_tokens", None) or 0
    return Usage(
        input_tokens=uncached + cached + written,
        output_tokens=output_tokens if output_tokens is not None else usage.output_tokens or 0,
        cached_tokens=cached,
        cache_write_tokens=written,
    )


class AnthropicProvider(Provider):
    kind = "anthropic"

    def __init__(
        self, name: str, config: ProviderConfig, timeouts: Timeouts, gate: ProviderGate
    ) -> None:
        super().__init__(name, config, timeouts, gate)
        self._timeout = anthropic.Timeout(timeouts.total, connect=timeouts.connect)
        self.client = anthropic.AsyncAnthropic(
            base_url=self.base_url,
            api_key=self._api_key(),
            max_retries=0,
            timeout=self._timeout,
            http_client=anthropic.DefaultAsyncHttpxClient(
                timeout=self._timeout, event_hooks={"request": [gate.hook]}
            ),
        )

    @property
    def default_url(self) -> str:
        return ANTHROPIC_URL

    def _params(self, call: ProviderCall) -> dict[str, Any]:
        system, messages = _anthropic_messages(call.messages)
        params: dict[str, Any] = {
            "model": call.model,
            "messages": messages,
            "max_tokens": call.max_tokens or ANTHROPIC_DEFAULT_MAX_TOKENS,
            "timeout": self._timeout,
        }
        if system:
            params["system"] = system
        if call.tools:
            params["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": dict(t.parameters)}
                for t in call.tools
            ]
            if call.tool_choice:
                params["tool_choice"] = {"type": _ANTHROPIC_TOOL_CHOICE[call.tool_choice]}
        if call.temperature is not None:
            params["temperature"] = min(1.0, max(0.0, call.temperature))  # Anthropic: 0..1
        return params

    async def complete(self, call: ProviderCall) -> Completion:
        try:
            message = await self.client.messages.create(**self._params(call))
        except SDK_ERRORS as e:
            raise_sdk_error(e)
        text: list[str] = []
        calls: list[ToolCall] = []
        for block in message.content:
            if block.type == "text":
                text.append(block.text)
            elif block.type == "tool_use":
                calls.append(
                    ToolCall(block.id, block.name, dict(block.input), json.dumps(block.input))
                )
        return Completion(
            "".join(text), tuple(calls), _anthropic_usage(message.usage), message.stop_reason
        )

    async def stream(self, call: ProviderCall) -> AsyncGenerator[ProviderEvent, None]:
        params = self._params(call)
        params["stream"] = True
        try:
            events = await self.client.messages.create(**params)
        except SDK_ERRORS as e:
            raise_sdk_error(e)
        text: list[str] = []
        # content block index → (tool call number, id, name, argument fragments)
        calls: dict[int, tuple[int, str, str, list[str]]] = {}
        start_usage: Any = None
        delta_usage: Any = None
        stop_reason: str | None = None
        try:
            async for event in events:
                if event.type == "message_start":
                    start_usage = event.message.usage
                elif event.type == "content_block_start":
                    block = event.content_block
                    if block.type == "tool_use":
                        number = len(calls)
                        calls[event.index] = (number, block.id, block.name, [])
                        yield ToolCallDelta(number, block.id, block.name, "")
                elif event.type == "content_block_delta":
                    delta = event.delta
                    if delta.type == "text_delta":
                        text.append(delta.text)
                        yield TextDelta(delta.text)
                    elif delta.type == "input_json_delta" and event.index in calls:
                        number, _, _, fragments = calls[event.index]
                        fragments.append(delta.partial_json)
                        yield ToolCallDelta(number, None, None, delta.partial_json)
                elif event.type == "message_delta":
                    delta_usage = event.usage
                    stop_reason = event.delta.stop_reason or stop_reason
        except SDK_ERRORS as e:
            raise_sdk_error(e)
        finally:
            await events.close()
        usage = _merge_anthropic_stream_usage(start_usage, delta_usage)
        tool_calls = tuple(
            ToolCall.parse(call_id, name, "".join(fragments) or "{}")
            for _, call_id, name, fragments in sorted(calls.values())
        )
        yield Completion("".join(text), tool_calls, usage, stop_reason)

    async def list_models(self) -> list[str]:
        try:
            return [m.id async for m in self.client.models.list(timeout=self._timeout)]
        except SDK_ERRORS as e:
            raise_sdk_error(e)

    async def close(self) -> None:
        await self.client.close()


def _merge_anthropic_stream_usage(start: Any, delta: Any) -> Usage:
    """message_start carries the input side; message_delta the cumulative output (and, in newer
    API versions, cumulative input counts, which then win)."""
    if delta is None:
        return _anthropic_usage(start)

    def pick(name: str) -> int:
        value = getattr(delta, name, None)
        if value is None:
            value = getattr(start, name, None)
        return int(value or 0)

    cached = pick("cache_read_input_tokens")
    written = pick("cache_creation_input_tokens")
    return Usage(
        input_tokens=pick("input_tokens") + cached + written,
        output_tokens=pick("output_tokens"),
        cached_tokens=cached,
        cache_write_tokens=written,
    )
