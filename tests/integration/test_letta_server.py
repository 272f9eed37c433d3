"""The official letta_client against a real Letta server (letta 0.16.8, tests/letta_real.py),
whose model is the scripted fake OpenAI server: agents, answers (plain and streamed), client-side
tools with their approval round trip, memory blocks and archival passages.

These pin down the wire shapes Doryo's Letta backend relies on (docs/letta-wire.md).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from letta_client import AsyncLetta

from tests.fakes.llm_script import Answer, Call
from tests.fakes.openai_server import FakeOpenAI
from tests.letta_real import RealLetta

WEATHER_TOOL: dict[str, Any] = {
    "name": "get_weather",
    "description": "The weather in a city, now.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "The city"}},
        "required": ["city"],
    },
}


@pytest.fixture
async def client(real_letta: RealLetta) -> AsyncIterator[AsyncLetta]:
    letta = AsyncLetta(base_url=real_letta.base_url, api_key="test", max_retries=0, timeout=60)
    yield letta
    await letta.close()


async def new_agent(client: AsyncLetta, real_letta: RealLetta) -> Any:
    return await client.agents.create(
        name=f"doryo-test-{uuid.uuid4().hex[:8]}",
        model=real_letta.model,
        embedding=real_letta.embedding,
        memory_blocks=[
            {"label": "persona", "value": "You are Doryo, a colleague in Matrix.", "limit": 2000},
            {"label": "human", "value": "Ada works on the billing team.", "limit": 2000},
        ],
        tags=["doryo-test"],
        metadata={"workspace": "w1"},
    )


def chat_requests(llm: FakeOpenAI) -> list[Any]:
    return [r for r in llm.requests if r.path == "/v1/chat/completions"]


def tool_names(body: dict[str, Any]) -> list[str]:
    return [tool["function"]["name"] for tool in body.get("tools", [])]


async def test_agent_answers_with_the_model_text(
    client: AsyncLetta, real_letta: RealLetta, letta_llm: FakeOpenAI
) -> None:
    agent = await new_agent(client, real_letta)
    assert agent.agent_type == "letta_v1_agent"
    assert agent.llm_config.handle == "openai-proxy/fake-model"
    assert {b.label: b.value for b in agent.memory.blocks}["persona"].startswith("You are Doryo")

    letta_llm.script(Answer("Hello Ada, I am Doryo."))
    response = await client.agents.messages.create(
        agent.id, messages=[{"role": "user", "content": "Hello, who are you?"}]
    )

    assert [m.message_type for m in response.messages] == ["assistant_message"]
    assert response.messages[0].content == "Hello Ada, I am Doryo."
    assert response.stop_reason.stop_reason == "end_turn"
    usage = response.usage
    assert usage.step_count == 1
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    (request,) = chat_requests(letta_llm)
    body = request.body
    assert body["model"] == "fake-model"
    system, user = body["messages"][0], body["messages"][-1]
    assert system["role"] == "system"
    assert "You are Doryo, a colleague in Matrix." in system["content"]
    assert "Ada works on the billing team." in system["content"]
    assert user == {"role": "user", "content": "Hello, who are you?"}
    assert "memory_replace" in tool_names(body)  # Letta's own memory tools are offered


async def test_streamed_steps_and_tokens(
    client: AsyncLetta, real_letta: RealLetta, letta_llm: FakeOpenAI
) -> None:
    agent = await new_agent(client, real_letta)

    letta_llm.script(Answer("A whole step at once."))
    stream = await client.agents.messages.create(agent.id, input="step please", streaming=True)
    events = [event async for event in stream]
    kinds = [e.message_type for e in events if e.message_type != "ping"]
    assert kinds == ["assistant_message", "stop_reason", "usage_statistics"]
    assert events[[e.message_type for e in events].index("assistant_message")].content == (
        "A whole step at once."
    )

    letta_llm.script(Answer("Token by token it comes."))
    stream = await client.agents.messages.create(
        agent.id, input="tokens please", streaming=True, stream_tokens=True
    )
    events = [event async for event in stream]
    pieces = [e for e in events if e.message_type == "assistant_message"]
    assert len(pieces) > 1
    assert len({e.id for e in pieces}) == 1  # one message, in pieces
    assert "".join(e.content for e in pieces) == "Token by token it comes."
    assert [e.message_type for e in events][-2:] == ["stop_reason", "usage_statistics"]
    assert chat_requests(letta_llm)[-1].body.get("stream") is True


async def ask_for_weather(client: AsyncLetta, agent_id: str, llm: FakeOpenAI, call_id: str) -> Any:
    """A turn in which the model calls the client-side tool: Letta stops and asks for it."""
    llm.script(Answer(tool_calls=[Call("get_weather", {"city": "Paris"}, id=call_id)]))
    response = await client.agents.messages.create(
        agent_id, input="What is the weather in Paris?", client_tools=[WEATHER_TOOL]
    )
    assert response.stop_reason.stop_reason == "requires_approval"
    (request,) = [m for m in response.messages if m.message_type == "approval_request_message"]
    assert request.tool_call.name == "get_weather"
    assert request.tool_call.tool_call_id == call_id
    assert json.loads(request.tool_call.arguments) == {"city": "Paris"}
    assert "get_weather" in tool_names(chat_requests(llm)[-1].body)
    return request


@pytest.mark.parametrize("shape", ["tool_return", "approval"])
async def test_client_tool_round_trip(
    client: AsyncLetta, real_letta: RealLetta, letta_llm: FakeOpenAI, shape: str
) -> None:
    agent = await new_agent(client, real_letta)
    request = await ask_for_weather(client, agent.id, letta_llm, "call_weather_1")

    result = {"tool_call_id": "call_weather_1", "status": "success", "tool_return": "sunny, 21C"}
    message: dict[str, Any]
    if shape == "tool_return":
        message = {"type": "tool_return", "tool_returns": [result]}
    else:  # the same result as an approval message
        message = {"type": "approval", "approvals": [{"type": "tool", **result}]}
    letta_llm.script(Answer("It is sunny in Paris, 21C."))
    response = await client.agents.messages.create(
        agent.id, messages=[message], client_tools=[WEATHER_TOOL]
    )

    kinds = [m.message_type for m in response.messages]
    assert kinds == ["tool_return_message", "assistant_message"]
    tool_return, answer = response.messages
    assert tool_return.tool_call_id == "call_weather_1"
    assert tool_return.status == "success"
    assert tool_return.tool_return == "sunny, 21C"
    assert tool_return.step_id == request.step_id
    assert answer.content == "It is sunny in Paris, 21C."
    assert response.stop_reason.stop_reason == "end_turn"

    # The model saw its call and the result as an OpenAI tool message (wrapped by Letta).
    messages = chat_requests(letta_llm)[-1].body["messages"]
    assert messages[-2]["tool_calls"][0]["id"] == "call_weather_1"
    assert messages[-1]["role"] == "tool"
    assert messages[-1]["tool_call_id"] == "call_weather_1"
    assert json.loads(messages[-1]["content"])["message"] == "sunny, 21C"


async def test_client_tool_denied(
    client: AsyncLetta, real_letta: RealLetta, letta_llm: FakeOpenAI
) -> None:
    agent = await new_agent(client, real_letta)
    await ask_for_weather(client, agent.id, letta_llm, "call_weather_2")

    letta_llm.script(Answer("Understood, I will not look it up."))
    response = await client.agents.messages.create(
        agent.id,
        messages=[
            {
                "type": "approval",
                "approvals": [
                    {
                        "type": "approval",
                        "tool_call_id": "call_weather_2",
                        "approve": False,
                        "reason": "not in this room",
                    }
                ],
            }
        ],
        client_tools=[WEATHER_TOOL],
    )

    tool_return, answer = response.messages
    assert tool_return.message_type == "tool_return_message"
    assert tool_return.status == "error"
    assert "denied" in tool_return.tool_return and "not in this room" in tool_return.tool_return
    assert answer.content == "Understood, I will not look it up."
    assert response.stop_reason.stop_reason == "end_turn"
    tool_message = chat_requests(letta_llm)[-1].body["messages"][-1]
    assert tool_message["role"] == "tool"
    assert json.loads(tool_message["content"])["status"] == "Failed"


async def test_streamed_client_tool_round_trip(
    client: AsyncLetta, real_letta: RealLetta, letta_llm: FakeOpenAI
) -> None:
    agent = await new_agent(client, real_letta)
    letta_llm.script(Answer(tool_calls=[Call("get_weather", {"city": "Nice"}, id="call_w3")]))
    stream = await client.agents.messages.create(
        agent.id, input="Weather in Nice?", streaming=True, client_tools=[WEATHER_TOOL]
    )
    kinds = [e.message_type async for e in stream if e.message_type != "ping"]
    assert kinds == ["approval_request_message", "stop_reason", "usage_statistics"]

    letta_llm.script(Answer("Nice is mild."))
    stream = await client.agents.messages.create(
        agent.id,
        messages=[
            {
                "type": "tool_return",
                "tool_returns": [
                    {"tool_call_id": "call_w3", "status": "success", "tool_return": "mild"}
                ],
            }
        ],
        streaming=True,
        client_tools=[WEATHER_TOOL],
    )
    events = [e async for e in stream if e.message_type != "ping"]
    assert [e.message_type for e in events] == [
        "tool_return_message",
        "assistant_message",
        "stop_reason",
        "usage_statistics",
    ]
    assert events[1].content == "Nice is mild."
    assert events[2].stop_reason == "end_turn"


async def test_memory_blocks_and_passages(
    client: AsyncLetta, real_letta: RealLetta, letta_llm: FakeOpenAI
) -> None:
    agent = await new_agent(client, real_letta)
    await client.agents.blocks.update("human", agent_id=agent.id, value="Ada moved to payments.")

    created = await client.agents.passages.create(
        agent.id, text="The office wifi password is hunter2."
    )
    assert created[0].text == "The office wifi password is hunter2."
    await client.agents.passages.create(agent.id, text="Lunch is at noon on Fridays.")
    embedded = [r for r in letta_llm.requests if r.path == "/v1/embeddings"]
    assert len(embedded) == 2
    assert embedded[0].body["model"] == "text-embedding-3-small"

    found = await client.agents.passages.search(agent.id, query="wifi password", top_k=1)
    assert [r.content for r in found.results] == ["The office wifi password is hunter2."]

    letta_llm.script(Answer("Noted."))
    await client.agents.messages.create(agent.id, input="Where does Ada work?")
    system = chat_requests(letta_llm)[-1].body["messages"][0]["content"]
    assert "Ada moved to payments." in system
    assert "Ada works on the billing team." not in system


async def test_identities_over_raw_http(real_letta: RealLetta) -> None:
    """letta_client 1.12 has no identities resource; the server's (deprecated) routes work.

    In 0.16.8, PUT /v1/identities/ (upsert) answers 404 for a key it does not know yet (its
    lookup raises instead of returning None): create with POST, then PUT updates."""
    key = f"@ada-{uuid.uuid4().hex[:6]}:localhost"
    identity = {"identifier_key": key, "name": "Ada", "identity_type": "user"}
    async with aiohttp.ClientSession(base_url=real_letta.base_url) as http:
        async with http.put("/v1/identities/", json=identity) as response:
            assert response.status == 404
        async with http.post("/v1/identities/", json=identity) as response:
            assert response.status == 200
            created = await response.json()
        assert created["id"].startswith("identity-")
        async with http.put("/v1/identities/", json={**identity, "name": "Ada L."}) as response:
            assert response.status == 200
            updated = await response.json()
        assert (updated["id"], updated["name"]) == (created["id"], "Ada L.")
