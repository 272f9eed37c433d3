"""The LLM router through the official openai and anthropic SDKs against the fake servers on
127.0.0.1, recording into the real PostgreSQL: answers, streaming and tool-call assembly,
retries, timeouts, fallbacks and circuit breakers."""

from __future__ import annotations

import json
from contextlib import aclosing
from decimal import Decimal

import asyncpg
import pytest

from bot.core.errors import ConfigError, LLMUnavailable, UnknownModel
from bot.llm import (
    CallContext,
    ChatRequest,
    ChatResult,
    LLMRouter,
    Message,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolSchema,
)
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.llm_script import Answer, Call, Error, Hang, Tokens
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.llm_fixtures import *  # noqa: F403
from tests.integration.llm_fixtures import Clock, RouterFactory

CONTEXT = CallContext(
    agent="assistant",
    blueprint_version=3,
    workspace_id="ws1",
    room_id="!room:hs",
    user_id="@alice:hs",
)
TOOLS = [
    ToolSchema(
        "create_task",
        "Create a task",
        {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]},
    ),
    ToolSchema("search_docs", "Search memory", {"type": "object", "properties": {}}),
]


def ask(text: str = "What did we decide?", **kwargs: object) -> ChatRequest:
    return ChatRequest(
        messages=[Message.system("You are Doryo."), Message.user(text)],
        context=CONTEXT,
        **kwargs,  # type: ignore[arg-type]
    )


async def collect(stream: object) -> tuple[list[StreamEvent], ChatResult]:
    events: list[StreamEvent] = []
    async with aclosing(stream) as s:  # type: ignore[type-var]
        async for event in s:
            events.append(event)
    final = events[-1]
    assert isinstance(final, ChatResult)
    return events[:-1], final


async def usage_rows(router: LLMRouter, pool: asyncpg.Pool) -> list[asyncpg.Record]:
    await router.flush()  # usage rows are written in the background
    return await pool.fetch("SELECT * FROM llm_usage ORDER BY id")


# --- answers ---------------------------------------------------------------------------------


async def test_chat_openai_normalizes_usage_and_records_the_call(
    make_router: RouterFactory, fake_openai: FakeOpenAI, llm_pool: asyncpg.Pool
) -> None:
    fake_openai.script(Answer("We chose Postgres.", usage=Tokens(120, 7, cached=100)))
    router = make_router()
    result = await router.chat(ask(temperature=0.2, max_tokens=50))

    assert result.text == "We chose Postgres."
    assert result.model == "local/llama3.1" and result.provider == "local"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (120, 7)
    assert result.usage.cached_tokens == 100
    assert result.cost_usd == 0  # a loopback provider is local: free
    assert result.ttft_ms is None and result.latency_ms >= 0
    body = fake_openai.last.body
    assert body["model"] == "llama3.1" and body["temperature"] == 0.2
    assert body["max_tokens"] == 50 and not body.get("stream")
    assert body["messages"][0] == {"role": "system", "content": "You are Doryo."}

    [row] = await usage_rows(router, llm_pool)
    assert (row["provider"], row["model"], row["outcome"]) == ("local", "llama3.1", "ok")
    assert (row["input_tokens"], row["output_tokens"], row["cached_tokens"]) == (120, 7, 100)
    assert row["cost_usd"] == 0 and row["streamed"] is False and row["error"] is None
    assert (row["agent"], row["blueprint_version"], row["workspace_id"]) == ("assistant", 3, "ws1")
    assert (row["room_id"], row["user_id"]) == ("!room:hs", "@alice:hs")
    assert row["latency_ms"] >= 0 and row["ttft_ms"] is None


async def test_chat_anthropic_with_tools_and_cached_usage(
    make_router: RouterFactory, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(
        Answer(
            "Creating it.",
            tool_calls=[Call("create_task", {"title": "Ship it"}, id="toolu_1")],
            usage=Tokens(500, 20, cached=400),
        )
    )
    router = make_router(default_model="claude/claude-haiku-4-5")
    result = await router.chat(ask(tools=TOOLS, tool_choice="auto"))

    assert result.text == "Creating it."
    assert result.tool_calls == (
        ToolCall("toolu_1", "create_task", {"title": "Ship it"}, '{"title": "Ship it"}'),
    )
    assert result.finish_reason == "tool_use"
    # input counts cached tokens too, whatever the provider's own convention
    assert (result.usage.input_tokens, result.usage.cached_tokens) == (500, 400)
    body = fake_anthropic.last.body
    assert body["system"] == "You are Doryo."
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "What did we decide?"}]}
    ]
    assert body["tools"][0]["input_schema"]["required"] == ["title"]
    assert body["tool_choice"] == {"type": "auto"} and body["max_tokens"] > 0
    headers = fake_anthropic.last.headers  # this SDK sends the key as a bearer token
    assert "sk-ant-test-key-123" in headers.get("x-api-key", "") + headers["authorization"]


async def test_tool_round_trip_is_translated_for_both_providers(
    make_router: RouterFactory, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    call = ToolCall.parse("call_9", "create_task", '{"title": "x"}')
    messages = [
        Message.system("sys"),
        Message.user("make a task"),
        Message.assistant("", [call]),
        Message.tool_result("call_9", "created T1"),
        Message.user("thanks"),
    ]
    fake_openai.script(Answer("ok"))
    fake_anthropic.script(Answer("ok"))
    router = make_router()
    await router.chat(ChatRequest(messages, model="local/m", tools=TOOLS))
    await router.chat(ChatRequest(messages, model="claude/m", tools=TOOLS))

    sent = fake_openai.last.body["messages"]
    assert sent[2]["tool_calls"] == [
        {
            "id": "call_9",
            "type": "function",
            "function": {"name": "create_task", "arguments": '{"title": "x"}'},
        }
    ]
    assert sent[3] == {"role": "tool", "tool_call_id": "call_9", "content": "created T1"}
    sent = fake_anthropic.last.body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"] == [
        {"type": "tool_use", "id": "call_9", "name": "create_task", "input": {"title": "x"}}
    ]
    assert sent[2]["content"][0] == {
        "type": "tool_result",
        "tool_use_id": "call_9",
        "content": "created T1",
    }
    assert sent[2]["content"][1] == {"type": "text", "text": "thanks"}


# --- streaming -------------------------------------------------------------------------------


async def test_stream_openai_assembles_text_and_asks_for_usage(
    make_router: RouterFactory, fake_openai: FakeOpenAI, llm_pool: asyncpg.Pool
) -> None:
    fake_openai.script(Answer("We chose Postgres for the memory.", usage=Tokens(50, 8)))
    router = make_router()
    deltas, result = await collect(router.stream(ask()))

    assert all(isinstance(d, TextDelta) for d in deltas) and len(deltas) == 6
    assert "".join(d.text for d in deltas if isinstance(d, TextDelta)) == result.text
    assert result.text == "We chose Postgres for the memory."
    assert (result.usage.input_tokens, result.usage.output_tokens) == (50, 8)
    assert result.ttft_ms is not None and result.ttft_ms <= result.latency_ms
    assert fake_openai.last.body["stream_options"] == {"include_usage": True}
    [row] = await usage_rows(router, llm_pool)
    assert row["streamed"] is True and row["ttft_ms"] is not None and row["output_tokens"] == 8


async def test_stream_openai_assembles_tool_calls_from_fragments(
    make_router: RouterFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(
        Answer(
            tool_calls=[
                Call("create_task", {"title": "Book the venue", "due": "friday"}),
                Call("search_docs", {"query": "venue options in Lisbon"}),
            ],
            argument_chunk=5,
        )
    )
    router = make_router()
    deltas, result = await collect(router.stream(ask(tools=TOOLS)))

    fragments = [d for d in deltas if isinstance(d, ToolCallDelta)]
    assert len(fragments) > 10  # really in pieces
    assert {d.index for d in fragments} == {0, 1}
    assert [d.name for d in fragments if d.name] == ["create_task", "search_docs"]
    for index, call in enumerate(result.tool_calls):
        pieces = "".join(d.arguments for d in fragments if d.index == index)
        assert json.loads(pieces) == call.arguments
    assert [c.name for c in result.tool_calls] == ["create_task", "search_docs"]
    assert result.tool_calls[0].arguments == {"title": "Book the venue", "due": "friday"}
    assert result.tool_calls[1].arguments == {"query": "venue options in Lisbon"}
    assert all(c.id.startswith("call_") for c in result.tool_calls)
    assert result.finish_reason == "tool_calls"


async def test_stream_anthropic_assembles_text_and_input_json(
    make_router: RouterFactory, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(
        Answer(
            "Let me look that up.",
            tool_calls=[Call("search_docs", {"query": "budget", "limit": 5}, id="toolu_7")],
            usage=Tokens(300, 40, cached=200),
            argument_chunk=4,
        )
    )
    router = make_router(default_model="claude/claude-haiku")
    deltas, result = await collect(router.stream(ask(tools=TOOLS)))

    assert "".join(d.text for d in deltas if isinstance(d, TextDelta)) == "Let me look that up."
    fragments = [d for d in deltas if isinstance(d, ToolCallDelta)]
    assert fragments[0].id == "toolu_7" and fragments[0].name == "search_docs"
    assert json.loads("".join(f.arguments for f in fragments)) == {"query": "budget", "limit": 5}
    assert result.tool_calls == (
        ToolCall(
            "toolu_7",
            "search_docs",
            {"query": "budget", "limit": 5},
            '{"query": "budget", "limit": 5}',
        ),
    )
    assert (result.usage.input_tokens, result.usage.output_tokens) == (300, 40)
    assert result.usage.cached_tokens == 200
    assert fake_anthropic.last.body["stream"] is True


# --- failures --------------------------------------------------------------------------------


async def test_retries_honour_retry_after_and_record_each_try(
    make_router: RouterFactory, fake_openai: FakeOpenAI, llm_pool: asyncpg.Pool
) -> None:
    fake_openai.script(Error(500, "upstream broke"), Error(429, retry_after=0.2), Answer("ok"))
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    router = make_router(sleep=sleep)
    result = await router.chat(ask())

    assert result.text == "ok" and result.failures == () and result.notes == ()
    assert len(fake_openai.requests) == 3
    assert 0 < waits[0] <= 0.05  # exponential backoff (config: 0.01 s, at most 0.05)
    assert waits[1] == pytest.approx(0.2)  # the provider's retry-after
    rows = await usage_rows(router, llm_pool)
    assert [r["outcome"] for r in rows] == ["error", "rate_limited", "ok"]
    assert "HTTP 500: upstream broke" in rows[0]["error"]
    assert rows[0]["cost_usd"] == 0 and rows[0]["input_tokens"] == 0


async def test_falls_back_to_the_second_provider(
    make_router: RouterFactory, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    fake_openai.script(Error(503, "down"), Error(503, "down"), Error(503, "down"))
    fake_anthropic.script(Answer("from claude"))
    router = make_router(fallbacks=["claude/claude-haiku"])
    result = await router.chat(ask())

    assert result.text == "from claude" and result.model == "claude/claude-haiku"
    assert len(fake_openai.requests) == 3  # 1 try + 2 retries
    assert [f.model for f in result.failures] == ["local/llama3.1"]
    assert result.failures[0].reason == "HTTP 503, 3 tries"
    assert result.notes == ("local/llama3.1 did not answer, so claude/claude-haiku did.",)


async def test_a_429_asking_to_wait_too_long_moves_on_at_once(
    make_router: RouterFactory, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    fake_openai.script(Error(429, "slow down", retry_after=600))
    fake_anthropic.script(Answer("fallback"))
    router = make_router(fallbacks=["claude/c"])
    result = await router.chat(ask())
    assert result.text == "fallback" and len(fake_openai.requests) == 1
    assert result.failures[0].reason == "rate limited"


async def test_a_bad_request_is_not_retried(
    make_router: RouterFactory, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    fake_openai.script(Error(404, "The model `gpt-9` does not exist"))
    fake_anthropic.script(Error(400, "messages: at least one message is required"))
    router = make_router(default_model="local/gpt-9", fallbacks=["claude/c"])
    with pytest.raises(LLMUnavailable) as caught:
        await router.chat(ask())
    assert len(fake_openai.requests) == 1 and len(fake_anthropic.requests) == 1
    assert str(caught.value) == (
        "No model answered: local/gpt-9 HTTP 404: The model `gpt-9` does not exist; "
        "claude/c HTTP 400: messages: at least one message is required."
    )
    assert router.breakers["local"].state == "closed"  # the provider is up; the request was bad


async def test_a_hanging_call_times_out_and_is_retried(
    make_router: RouterFactory, fake_openai: FakeOpenAI, llm_pool: asyncpg.Pool
) -> None:
    fake_openai.script(Hang(), Answer("finally"))
    # Timeouts in these tests leave room for a loaded machine: a real answer must never hit them.
    router = make_router(timeouts={"total": 1.0})
    result = await router.chat(ask())
    assert result.text == "finally"
    rows = await usage_rows(router, llm_pool)
    assert [r["outcome"] for r in rows] == ["timeout", "ok"]
    assert rows[0]["latency_ms"] >= 990


async def test_a_stream_without_a_first_token_is_retried(
    make_router: RouterFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(Answer("late", first_delay=30), Answer("on time"))
    router = make_router(timeouts={"first_token": 1.0, "total": 5})
    _, result = await collect(router.stream(ask()))
    assert result.text == "on time" and len(fake_openai.requests) == 2


async def test_a_stream_that_stalls_after_its_first_token_ends_with_an_error(
    make_router: RouterFactory,
    fake_openai: FakeOpenAI,
    fake_anthropic: FakeAnthropic,
    llm_pool: asyncpg.Pool,
) -> None:
    fake_openai.script(Answer("one two three", stall_after=1))
    router = make_router(timeouts={"first_token": 1.0, "total": 2.0}, fallbacks=["claude/c"])
    seen: list[StreamEvent] = []
    with pytest.raises(LLMUnavailable, match=r"local/llama3.1 timed out after 2 s"):
        async with aclosing(router.stream(ask())) as stream:
            async for event in stream:
                seen.append(event)
    assert seen == [TextDelta("one")]
    assert fake_anthropic.requests == []  # no fallback once part of an answer is out
    [row] = await usage_rows(router, llm_pool)
    assert row["outcome"] == "timeout" and row["ttft_ms"] is not None


async def test_everything_failing_says_which_providers_and_why(
    make_router: RouterFactory,
    fake_openai: FakeOpenAI,
    fake_anthropic: FakeAnthropic,
    llm_pool: asyncpg.Pool,
) -> None:
    fake_openai.script(Error(500), Error(500), Error(500))
    fake_anthropic.script(Error(529, "Overloaded"), Hang())
    router = make_router(fallbacks=["claude/c"], retries={"attempts": 1}, timeouts={"total": 1.0})
    with pytest.raises(LLMUnavailable) as caught:
        await router.chat(ask())
    assert str(caught.value) == (
        "No model answered: local/llama3.1 HTTP 500, 2 tries; "
        "claude/c timed out after 1 s, 2 tries."
    )
    assert caught.value.failures == [
        ("local/llama3.1", "HTTP 500, 2 tries"),
        ("claude/c", "timed out after 1 s, 2 tries"),
    ]
    rows = await usage_rows(router, llm_pool)
    assert [(r["provider"], r["outcome"]) for r in rows] == [
        ("local", "error"),
        ("local", "error"),
        ("claude", "error"),
        ("claude", "timeout"),
    ]


async def test_circuit_breaker_opens_skips_and_recovers(
    make_router: RouterFactory, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    clock = Clock()
    router = make_router(
        clock=clock,
        fallbacks=["claude/c"],
        retries={"attempts": 0},
        circuit_breaker={"failures": 2, "cooldown": 30},
    )
    fake_openai.script(Error(500), Error(500))
    fake_anthropic.default = Answer("claude answers")
    for _ in range(2):
        assert (await router.chat(ask())).model == "claude/c"
    assert router.breakers["local"].state == "open"

    # Open: skipped without a request.
    clock.advance(18)
    result = await router.chat(ask())
    assert result.model == "claude/c" and len(fake_openai.requests) == 2
    assert result.failures[0].reason == "skipped (failing, probed again in 12 s)"
    _, streamed = await collect(router.stream(ask()))
    assert streamed.model == "claude/c" and len(fake_openai.requests) == 2

    # After the cool-down one call probes it; its success closes the circuit.
    clock.advance(12)
    assert router.breakers["local"].state == "half_open"
    fake_openai.script(Answer("back"))
    assert (await router.chat(ask())).text == "back"
    assert router.breakers["local"].state == "closed"
    fake_openai.script(Answer("again"))
    assert (await router.chat(ask())).text == "again"


async def test_a_failed_probe_opens_the_circuit_again(
    make_router: RouterFactory, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    clock = Clock()
    router = make_router(
        clock=clock,
        fallbacks=["claude/c"],
        retries={"attempts": 0},
        circuit_breaker={"failures": 1, "cooldown": 10},
    )
    fake_anthropic.default = Answer("claude")
    fake_openai.script(Error(500))
    await router.chat(ask())
    clock.advance(10)
    fake_openai.script(Error(502))
    await router.chat(ask())  # the probe fails
    assert router.breakers["local"].state == "open" and len(fake_openai.requests) == 2
    clock.advance(9)
    await router.chat(ask())
    assert len(fake_openai.requests) == 2  # skipped again, for a whole new cool-down


async def test_streams_closed_early_are_recorded_as_cancelled(
    make_router: RouterFactory, fake_openai: FakeOpenAI, llm_pool: asyncpg.Pool
) -> None:
    fake_openai.script(Answer("a b c d e f", chunk_delay=0.01))
    router = make_router()
    async with aclosing(router.stream(ask())) as stream:
        async for _ in stream:
            break
    [row] = await usage_rows(router, llm_pool)
    assert row["outcome"] == "cancelled"
    assert router.breakers["local"].state == "closed"


# --- models, secrets, redaction --------------------------------------------------------------


async def test_aliases_unknown_models_and_the_model_list(
    make_router: RouterFactory, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    fake_openai.models = ["llama3.1", "qwen2.5"]
    router = make_router(
        aliases={"fast": "local/llama3.1", "smart": "claude/claude-haiku-4-5"},
        fallbacks=["smart"],
        prices={"claude/claude-haiku-4-5": {"input": 3, "output": 15}},
    )
    assert router.catalog.resolve("smart").ref == "claude/claude-haiku-4-5"
    assert router.catalog.resolve(None).ref == "local/llama3.1"
    assert router.catalog.resolve("local/meta-llama/Llama-3-8B").model == "meta-llama/Llama-3-8B"
    with pytest.raises(UnknownModel) as caught:
        router.catalog.resolve("openai/gpt-4o")
    assert str(caught.value) == (
        "There is no model `openai/gpt-4o`. Name one as `provider/model` with a configured "
        "provider (claude, local), or an alias (`fast`, `smart`)."
    )
    models = {m.ref: m for m in router.models()}
    assert models["local/llama3.1"].roles == ("default", "alias:fast")
    assert models["local/llama3.1"].local and models["local/llama3.1"].kind == "openai"
    sonnet = models["claude/claude-haiku-4-5"]
    assert sonnet.roles == ("fallback", "alias:smart", "priced") and not sonnet.local
    assert sonnet.price is not None and sonnet.price.output == Decimal(15)
    assert sonnet.as_dict()["price"] == {"input": "3", "output": "15", "cached_input": None}
    assert json.dumps([m.as_dict() for m in router.models()])  # the admin API's answer
    listed = await router.provider_models()
    assert listed == {"local": ["llama3.1", "qwen2.5"], "claude": ["fake-model"]}


async def test_secrets_never_reach_a_provider_or_the_usage_table(
    make_router: RouterFactory, fake_openai: FakeOpenAI, llm_pool: asyncpg.Pool
) -> None:
    fake_openai.script(Error(401, "Incorrect API key provided: as-token-very-secret"))
    router = make_router()
    with pytest.raises(LLMUnavailable) as caught:
        await router.chat(ask("my token is as-token-very-secret, and sk-ant-test-key-123"))
    sent = json.dumps(fake_openai.last.body)
    assert "as-token-very-secret" not in sent and "sk-ant-test-key-123" not in sent
    assert "[secret]" in sent
    assert "as-token-very-secret" not in str(caught.value)
    [row] = await usage_rows(router, llm_pool)
    assert "as-token-very-secret" not in row["error"]


async def test_contact_details_are_redacted_for_external_providers_only(
    make_router: RouterFactory, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    text = "Mail bob@example.com or call +49 30 1234 5678 about order 20240115."
    fake_openai.script(Answer("ok"))
    fake_anthropic.script(Answer("ok"))
    router = make_router(redaction={"enabled": True}, fallbacks=[])
    await router.chat(ask(text))  # local: as written
    assert fake_openai.last.messages[1]["content"] == text
    await router.chat(ask(text, model="claude/c"))  # external: redacted
    sent = fake_anthropic.last.body["messages"][0]["content"][0]["text"]
    assert sent == "Mail [email] or call [phone] about order 20240115."


async def test_config_references_must_resolve(make_router: RouterFactory) -> None:
    with pytest.raises(ConfigError, match=r"^llm.fallbacks.0: 'fast' is neither an alias"):
        make_router(fallbacks=["fast"])
    with pytest.raises(ConfigError, match=r"^llm.budgets.downgrade_model: 'cheap' is neither"):
        make_router(budgets={"downgrade_model": "cheap"})
    router = make_router(aliases={"fast": "local/x"}, fallbacks=["fast"])
    assert [r.ref for r in router.catalog.chain()] == ["local/llama3.1", "local/x"]
