"""Pure parts of the router: wire translation, usage, retry-after, local URLs, limits, messages."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from bot.llm.budget import BudgetReached, downgraded_message, refused_message
from bot.llm.providers import (
    _anthropic_messages,
    _anthropic_usage,
    _merge_anthropic_stream_usage,
    _openai_messages,
    is_local_url,
    provider_error,
    retry_after_seconds,
)
from bot.llm.ratelimit import RateLimit, Scope, rate_limited_message
from bot.llm.types import Limits, Message, ToolCall
from bot.llm.usage import month_start, next_month_start


def _status_error(sdk: Any, status: int, body: object, headers: dict[str, str]) -> Exception:
    request = httpx2.Request("POST", "http://127.0.0.1/v1/x")
    response = httpx2.Response(status, headers=headers, request=request)
    error: Exception = sdk.APIStatusError("failed", response=response, body=body)
    return error


@pytest.mark.parametrize("sdk", [openai, anthropic])
@pytest.mark.parametrize(
    ("status", "retryable", "kind"),
    [
        (429, True, "rate limited"),
        (500, True, "HTTP 500"),
        (529, True, "HTTP 529"),
        (408, True, "HTTP 408"),
        (400, False, "HTTP 400"),
        (401, False, "HTTP 401"),
        (404, False, "HTTP 404"),
        (200, True, "stream error"),  # an error event inside a streamed answer
    ],
)
def test_sdk_errors_become_provider_errors(
    sdk: Any, status: int, retryable: bool, kind: str
) -> None:
    body = {"type": "error", "error": {"type": "x", "message": "the provider says no"}}
    error = provider_error(_status_error(sdk, status, body, {"retry-after": "2"}))
    assert (error.retryable, error.kind, error.timeout) == (retryable, kind, False)
    assert "the provider says no" in str(error)
    assert error.retry_after == (2.0 if retryable and status >= 400 else None)


def test_tool_call_arguments_parse_leniently() -> None:
    assert ToolCall.parse("c", "f", '{"a": 1}').arguments == {"a": 1}
    assert ToolCall.parse("c", "f", "").arguments == {}
    assert ToolCall.parse("c", "f", '{"a": ').arguments == {}  # cut off: kept raw only
    assert ToolCall.parse("c", "f", "[1]").arguments == {}
    assert ToolCall("c", "f", {"a": 1}).arguments_json == '{"a":1}'


def test_openai_messages() -> None:
    call = ToolCall.parse("c1", "f", '{"x":1}')
    assert _openai_messages(
        [Message.system("s"), Message.assistant("", [call]), Message.tool_result("c1", "r")]
    ) == [
        {"role": "system", "content": "s"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x":1}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "r"},
    ]


def test_anthropic_messages_merge_turns_and_lift_the_system_prompt() -> None:
    call = ToolCall.parse("c1", "f", '{"x":1}')
    system, messages = _anthropic_messages(
        [
            Message.system("a"),
            Message.system("b"),
            Message.user("q"),
            Message.assistant("thinking", [call]),
            Message.tool_result("c1", "r1"),
            Message.user("and?"),
        ]
    )
    assert system == "a\n\nb"
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"] == [
        {"type": "text", "text": "thinking"},
        {"type": "tool_use", "id": "c1", "name": "f", "input": {"x": 1}},
    ]
    assert [b["type"] for b in messages[2]["content"]] == ["tool_result", "text"]


def test_anthropic_usage_counts_cached_tokens_as_input() -> None:
    usage = SimpleNamespace(
        input_tokens=10,
        output_tokens=5,
        cache_read_input_tokens=80,
        cache_creation_input_tokens=10,
    )
    normalized = _anthropic_usage(usage)
    assert (normalized.input_tokens, normalized.cached_tokens) == (100, 80)
    assert normalized.cache_write_tokens == 10 and normalized.output_tokens == 5
    delta = SimpleNamespace(
        output_tokens=42,
        input_tokens=None,
        cache_read_input_tokens=None,
        cache_creation_input_tokens=None,
    )
    merged = _merge_anthropic_stream_usage(usage, delta)
    assert (merged.input_tokens, merged.output_tokens, merged.cached_tokens) == (100, 42, 80)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # in the past
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_seconds(headers) == expected


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("http://127.0.0.1:11434/v1", True),
        ("http://localhost:8000/v1", True),
        ("http://10.0.0.5/v1", True),
        ("http://192.168.1.20:8080", True),
        ("http://[::1]:8000/v1", True),
        ("https://api.openai.com/v1", False),
        ("https://api.deepseek.com", False),
        ("http://ollama:11434/v1", False),  # a name: say local: true in the config
    ],
)
def test_is_local_url(url: str, local: bool) -> None:
    assert is_local_url(url) is local


def test_limits_merge_keeps_what_the_override_leaves_open() -> None:
    defaults = Limits(user_requests_per_minute=20, workspace_monthly_usd=Decimal(10))
    merged = defaults.merged(Limits(workspace_monthly_usd=Decimal(0), at_limit="downgrade"))
    assert merged.user_requests_per_minute == 20
    assert merged.workspace_monthly_usd == 0 and merged.at_limit == "downgrade"
    assert defaults.merged(None) is defaults


def test_user_facing_sentences() -> None:
    scope = Scope("workspace", "ws", RateLimit(60, 400_000))
    assert rate_limited_message(scope, "tokens", 42.3) == (
        "This workspace's limit of 400,000 tokens a minute to the model is reached; "
        "it resets in 42 s."
    )
    assert rate_limited_message(Scope("user", "@a:hs", RateLimit(2)), "requests", 0.2) == (
        "Your limit of 2 requests a minute to the model is reached; it resets in 1 s."
    )
    reached = BudgetReached("agent", Decimal(20), Decimal("20.5"), next_month_start())
    assert refused_message(reached).startswith(
        "This agent's monthly model budget of $20.00 is spent ($20.50 so far this month)."
    )
    assert "so the cheaper local/x answered instead" in downgraded_message(reached, "local/x")


def test_next_month_start_crosses_the_year() -> None:
    from datetime import UTC, datetime

    assert next_month_start(datetime(2026, 12, 31, 23, tzinfo=UTC)) == datetime(
        2027, 1, 1, tzinfo=UTC
    )
    assert month_start(datetime(2026, 2, 14, tzinfo=UTC)).day == 1
