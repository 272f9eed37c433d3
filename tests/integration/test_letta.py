"""A blueprint with `backend: letta`, end to end on the real Synapse with the fake Letta server:
@ask answered by the workspace's Letta agent (streamed by edits, ending `done`), read-only tools
run at once, a writing tool call as an action card only the host's ✅ runs (once), the result
or the denial sent back to Letta and its continuation posted in the card's thread, a restart
while the card waits, Letta down → the room told and the built-in agent answering, usage
recorded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bot.actions.card import ACTION_KEY
from bot.app import Doryo
from bot.core.config import Config
from bot.memory import LocalEmbedder
from synapse_dev.server import free_port
from tests.client import JSON, MatrixClient, replies_to
from tests.conftest import TEST_MODEL_ANSWER, Homeserver, running_bot
from tests.fakes.letta_server import CallTool, FakeLetta, Say
from tests.integration.agent_helpers import ANSWER_KEY, edits_of, final_answer, latest
from tests.integration.test_actions import react, status_of, team_with_member, wait_status
from tests.integration.workspace_helpers import Team, command
from tests.poll import eventually

MODEL = "openai/gpt-4o-mini"


@pytest.fixture
async def letta() -> AsyncIterator[FakeLetta]:
    async with FakeLetta() as server:
        yield server


def letta_config(bot_config: Callable[..., Config], url: str, **extra: Any) -> Config:
    return bot_config(letta={"base_url": url, "api_key": "test-key", "model": MODEL, **extra})


@pytest.fixture
async def letta_bot(
    bot_config: Callable[..., Config], local_embedder: LocalEmbedder, letta: FakeLetta
) -> AsyncIterator[Doryo]:
    async with running_bot(letta_config(bot_config, letta.url), local_embedder) as doryo:
        yield doryo


async def letta_team(homeserver: Homeserver, bot: Doryo) -> tuple[Team, str, MatrixClient]:
    """Host alice, member bob, a session; the workspace's agent is a Letta blueprint."""
    team, session, bob = await team_with_member(homeserver, bot)
    await bot.ctx.blueprints.create(
        {"code": "colleague", "extends": "assistant", "backend": "letta"}, source="api"
    )
    answer = await command(team.alice, team.dm, "!ws settings agent colleague")
    assert "colleague" in answer, answer
    return team, session, bob


async def card_for(person: MatrixClient, room: str, question: str) -> JSON:
    found = await person.wait_for(
        room, lambda e: replies_to(e) == question and ACTION_KEY in e.get("content", {})
    )
    return found[0]


async def continuation(person: MatrixClient, room: str, card: JSON) -> JSON:
    """The agent's answer in the card's thread, once done (or error)."""

    async def finished() -> JSON | None:
        await person.sync_once(timeout_ms=300)
        for event in person.timeline.get(room, []):
            content = event.get("content", {})
            relates = content.get("m.relates_to", {})
            if (
                ANSWER_KEY in content
                and relates.get("rel_type") == "m.thread"
                and relates.get("event_id") == card["event_id"]
            ):
                final = latest(person, room, event)
                if final[ANSWER_KEY]["status"] in ("done", "error"):
                    return final
        return None

    return await eventually(finished, timeout=30)


async def test_ask_is_answered_by_the_letta_agent(
    homeserver: Homeserver, letta_bot: Doryo, letta: FakeLetta
) -> None:
    bot = letta_bot
    team, session, bob = await letta_team(homeserver, bot)
    # Long enough (2.5 s) for several edits at one per edit_interval on a busy machine.
    letta.script(Say("Falcon launches on March 14, as Dana decided.", chunks=10, chunk_delay=0.25))
    question = await bob.send_text(session, "@ask when do we launch Falcon?")
    answer, content = await final_answer(bob, session, question)

    block = content[ANSWER_KEY]
    assert block["status"] == "done" and block["model"] == f"letta/{MODEL}"
    assert "Falcon launches on March 14, as Dana decided." in content["body"]
    assert answer["content"]["m.relates_to"]["rel_type"] == "m.thread"
    streaming = [
        e
        for e in edits_of(bob, session, answer["event_id"])
        if e["content"]["m.new_content"][ANSWER_KEY]["status"] == "streaming"
    ]
    assert len(streaming) >= 2, "the answer should stream in several edits"

    # One agent for the workspace and blueprint version: persona = the instructions, and a
    # workspace block; the question went with its sender, and the tools as client-side tools.
    assert len(letta.agents) == 1
    agent = next(iter(letta.agents.values()))
    blocks = {b["label"]: b["value"] for b in agent["blocks"]}
    assistant = await bot.ctx.blueprints.get("assistant")
    assert blocks["persona"] == assistant.instructions.strip() or blocks["persona"] == (
        assistant.instructions
    )
    assert "Rocket" in blocks["workspace"] and "- Work (active" in blocks["workspace"]
    assert f"doryo-workspace:{team.workspace_id}" in agent["tags"]
    assert agent["llm_config"]["handle"] == MODEL
    turn = letta.turns[-1]
    sent = turn["messages"][0]
    assert sent["role"] == "user" and sent["name"] == bob.user_id[1:].split(":")[0]
    assert bob.user_id in sent["content"] and "when do we launch Falcon?" in sent["content"]
    assert turn["streaming"] is True
    offered = {t["name"] for t in turn["client_tools"]}
    assert {"search_docs", "create_task", "send_notification"} <= offered
    assert all("parameters" in t and "description" in t for t in turn["client_tools"])

    # A read-only tool runs at once; its result goes back and the answer goes on.
    letta.script(
        CallTool("search_docs", {"query": "launch"}),
        Say("Memory says nothing more."),
    )
    second = await bob.send_text(session, "@ask anything else about the launch?")
    _, content = await final_answer(bob, session, second)
    assert content[ANSWER_KEY]["status"] == "done"
    assert "Memory says nothing more." in content["body"]
    assert [r["status"] for r in letta.tool_returns] == ["success"]
    assert len(letta.agents) == 1  # the same agent answered again

    # Usage recorded like any model call.
    await bot.ctx.llm.flush()
    rows = await bot.ctx.db.fetch(
        "SELECT * FROM llm_usage WHERE provider = 'letta' AND workspace_id = $1 ORDER BY id",
        team.workspace_id,
    )
    assert len(rows) == 3  # the first question, then the search and its continuation
    assert all(r["outcome"] == "ok" and r["input_tokens"] > 0 for r in rows)
    assert rows[0]["agent"] == "colleague" and rows[0]["user_id"] == bob.user_id
    assert rows[0]["model"] == MODEL and rows[0]["streamed"]
    usage = await command(bob, session, "!usage")
    assert "letta" in usage


async def test_letta_tool_call_waits_for_the_hosts_confirmation(
    homeserver: Homeserver, letta_bot: Doryo, letta: FakeLetta
) -> None:
    bot = letta_bot
    team, session, bob = await letta_team(homeserver, bot)
    letta.script(
        CallTool("create_task", {"title": "Ship v1"}),
        Say("The task Ship v1 is on the list."),
    )
    question = await bob.send_text(session, "@ask please add a task Ship v1")
    card = await card_for(bob, session, question)
    block = card["content"][ACTION_KEY]
    assert block["status"] == "awaiting_confirm" and block["tool"] == "create_task"
    assert block["args"] == {"title": "Ship v1"} and block["requested_by"] == bob.user_id
    _, content = await final_answer(bob, session, question)
    assert content[ANSWER_KEY]["status"] == "done"
    assert "Waiting for the host's ✅" in content["body"] and block["id"] in content["body"]

    # While it waits, the agent takes no other question (Letta would refuse it).
    busy = await bob.send_text(session, "@ask what else?")
    _, content = await final_answer(bob, session, busy)
    assert content[ANSWER_KEY]["status"] == "error" and block["id"] in content["body"]

    # Not the host: nothing runs, nothing reaches Letta.
    await react(bob, session, card["event_id"], "✅")
    marker = await bob.send_text(session, "!ping")
    await bob.wait_for_reply(session, marker)
    assert status_of(bob, session, card) == "awaiting_confirm"
    assert (
        letta.tool_returns == [] and await bot.ctx.tasklist.of_workspace(team.workspace_id) == []
    )

    await react(team.alice, session, card["event_id"], "✅")
    await react(team.alice, session, card["event_id"], "👍")
    await wait_status(bob, session, card, "done")
    final = await continuation(bob, session, card)
    assert final[ANSWER_KEY]["status"] == "done"
    assert "The task Ship v1 is on the list." in final["body"]
    assert final[ANSWER_KEY]["question"] == question

    tasks = await bot.ctx.tasklist.of_workspace(team.workspace_id)
    assert [(t.title, t.created_by) for t in tasks] == [("Ship v1", bob.user_id)]
    runs = await bot.ctx.db.fetch(
        "SELECT * FROM tool_runs WHERE workspace_id = $1", team.workspace_id
    )
    assert len(runs) == 1 and runs[0]["confirmed_by"] == team.alice.user_id
    assert len(letta.tool_returns) == 1
    returned = letta.tool_returns[0]
    assert returned["status"] == "success" and "Ship v1" in returned["tool_return"]
    assert not letta.waiting  # Letta got what it waited for


async def test_only_who_may_propose_gets_writing_tools(
    homeserver: Homeserver, letta_bot: Doryo, letta: FakeLetta
) -> None:
    """With `act: host`, a member's @ask cannot reach a card through the agent either."""
    bot = letta_bot
    team, session, bob = await letta_team(homeserver, bot)
    answer = await command(team.alice, team.dm, "!ws settings act host")
    assert "host" in answer, answer

    letta.script(Say("Noted."))
    question = await bob.send_text(session, "@ask please add a task Ship v1")
    _, content = await final_answer(bob, session, question)
    assert content[ANSWER_KEY]["status"] == "done"
    offered = {t["name"] for t in letta.turns[-1]["client_tools"]}
    assert "search_docs" in offered
    assert not offered & {"create_task", "send_notification", "create_followup"}

    letta.script(Say("Noted."))
    question = await team.alice.send_text(session, "@ask please add a task Ship v1")
    await final_answer(team.alice, session, question)
    assert "create_task" in {t["name"] for t in letta.turns[-1]["client_tools"]}


async def test_cancel_sends_a_denial_to_letta(
    homeserver: Homeserver, letta_bot: Doryo, letta: FakeLetta
) -> None:
    team, session, bob = await letta_team(homeserver, letta_bot)
    letta.script(
        CallTool("send_notification", {"user": team.alice.user_id, "text": "Hi"}),
        Say("Understood, I will not send it."),
    )
    question = await bob.send_text(session, "@ask tell alice hi")
    card = await card_for(bob, session, question)
    await react(team.alice, session, card["event_id"], "❌")
    await wait_status(bob, session, card, "cancelled")
    final = await continuation(bob, session, card)
    assert "Understood, I will not send it." in final["body"]
    assert letta.tool_returns == []
    assert len(letta.denials) == 1 and letta.denials[0]["approve"] is False
    assert team.alice.user_id in letta.denials[0]["reason"]
    assert not letta.waiting


async def test_a_card_survives_a_restart(
    homeserver: Homeserver,
    letta_bot: Doryo,
    letta: FakeLetta,
    bot_config: Callable[..., Config],
    local_embedder: LocalEmbedder,
) -> None:
    team, session, bob = await letta_team(homeserver, letta_bot)
    letta.script(CallTool("create_task", {"title": "After restart"}), Say("Added after all."))
    question = await bob.send_text(session, "@ask add a task After restart")
    card = await card_for(bob, session, question)
    await final_answer(bob, session, question)
    await letta_bot.stop()

    second = Doryo(letta_config(bot_config, letta.url), embedder=local_embedder)
    await second.start()
    try:
        await asyncio.wait_for(second.connected.wait(), 30)
        await react(team.alice, session, card["event_id"], "✅")
        await wait_status(bob, session, card, "done")
        final = await continuation(bob, session, card)
        assert "Added after all." in final["body"]
        assert [r["status"] for r in letta.tool_returns] == ["success"]
        titles = [t.title for t in await second.ctx.tasklist.of_workspace(team.workspace_id)]
        assert titles == ["After restart"]
    finally:
        await second.stop()


async def test_letta_down_tells_the_room_and_the_native_agent_answers(
    homeserver: Homeserver,
    bot_config: Callable[..., Config],
    local_embedder: LocalEmbedder,
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    bot = Doryo(letta_config(bot_config, down, timeout=5), embedder=local_embedder)
    await bot.start()
    try:
        await asyncio.wait_for(bot.connected.wait(), timeout=30)
        team, session, bob = await letta_team(homeserver, bot)
        question = await bob.send_text(session, "@ask are you there?")
        notice = await bob.wait_for(
            session,
            lambda e: (
                replies_to(e) == question
                and e.get("content", {}).get("msgtype") == "m.notice"
                and "Letta" in e["content"].get("body", "")
            ),
        )
        text = notice[0]["content"]["body"]
        assert down in text and "letta.base_url" in text and "built-in agent" in text
        _, content = await final_answer(bob, session, question)
        assert content[ANSWER_KEY]["status"] == "done"
        assert content[ANSWER_KEY]["model"] == "local/llama3.1"
        assert TEST_MODEL_ANSWER in content["body"]
    finally:
        await bot.stop()
