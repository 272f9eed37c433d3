"""The Letta backend against the real Letta server (letta 0.16.8, tests/letta_real.py) in a real
room: an @ask answered by the Letta agent, then a Letta tool call confirmed by the host's ✅ and
continued by Letta in the card's thread; deleting the workspace ends the agent."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from letta_client import NotFoundError

from bot.actions.card import ACTION_KEY
from bot.app import Doryo
from bot.core.config import Config
from bot.memory import LocalEmbedder
from tests.conftest import Homeserver
from tests.fakes.llm_script import Answer, Call
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.agent_helpers import ANSWER_KEY, final_answer
from tests.integration.test_actions import react, wait_status
from tests.integration.test_deletion import ask_delete, card_status
from tests.integration.test_letta import card_for, continuation, letta_team
from tests.letta_real import RealLetta


async def test_real_letta_answers_and_continues_after_the_hosts_confirmation(
    homeserver: Homeserver,
    bot_config: Callable[..., Config],
    local_embedder: LocalEmbedder,
    real_letta: RealLetta,
    letta_llm: FakeOpenAI,
) -> None:
    config = bot_config(
        letta={
            "base_url": real_letta.base_url,
            "api_key": "any",
            "model": real_letta.model,
            "embedding": real_letta.embedding,
            "timeout": 60,
        }
    )
    bot = Doryo(config, embedder=local_embedder)
    await bot.start()
    try:
        await asyncio.wait_for(bot.connected.wait(), timeout=30)
        team, session, bob = await letta_team(homeserver, bot)

        letta_llm.script(Answer("Hello from the real Letta agent."))
        question = await bob.send_text(session, "@ask who are you?")
        _, content = await final_answer(bob, session, question, timeout=60)
        assert content[ANSWER_KEY]["status"] == "done", content["body"]
        assert "Hello from the real Letta agent." in content["body"]
        assert content[ANSWER_KEY]["model"] == f"letta/{real_letta.model}"
        # Letta's model was told the persona, the workspace block, who asks, and our tools.
        sent = letta_llm.requests[-1].body
        prompt = "\n".join(str(m.get("content")) for m in sent["messages"])
        assert "Rocket" in prompt and bob.user_id in prompt and "who are you?" in prompt
        assert "create_task" in {t["function"]["name"] for t in sent["tools"]}

        letta_llm.script(
            Answer(tool_calls=[Call("create_task", {"title": "Real Letta task"})]),
            Answer("The task Real Letta task is on the list."),
        )
        second = await bob.send_text(session, "@ask add a task Real Letta task")
        card = await card_for(bob, session, second)
        assert card["content"][ACTION_KEY]["tool"] == "create_task"
        await react(team.alice, session, card["event_id"], "✅")
        await wait_status(bob, session, card, "done")
        final = await continuation(bob, session, card)
        assert final[ANSWER_KEY]["status"] == "done", final["body"]
        assert "The task Real Letta task is on the list." in final["body"]
        titles = [t.title for t in await bot.ctx.tasklist.of_workspace(team.workspace_id)]
        assert titles == ["Real Letta task"]
        # Letta's model saw the result of the run as the tool's answer.
        last = letta_llm.requests[-1].body["messages"]
        assert any(
            m.get("role") == "tool" and "Real Letta task" in str(m["content"]) for m in last
        )
        await bot.ctx.llm.flush()
        calls = await bot.ctx.db.fetchval(
            "SELECT count(*) FROM llm_usage WHERE provider = 'letta' AND outcome = 'ok'"
        )
        assert calls == 3

        # Deleting the workspace ends its agent on the Letta server.
        agents = [
            a["agent_id"] for a in await bot.ctx.db.fetch("SELECT agent_id FROM letta_agents")
        ]
        assert len(agents) == 1
        card = await ask_delete(team.alice, session, bot)
        assert "1 Letta agent(s)" in card["content"]["body"]
        await react(team.alice, session, card["event_id"], "✅")
        done = await card_status(team.alice, session, card, "done")
        assert "1 of 1 Letta agent(s) ended" in done["body"]
        assert bot.ctx.letta is not None
        with pytest.raises(NotFoundError):
            await bot.ctx.letta.client.sdk.agents.retrieve(agents[0])
    finally:
        await bot.stop()
