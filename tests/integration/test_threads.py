"""Conversations as Element has them: follow-ups in an answer's thread, answers in a DM's
timeline, commands in threads. A follow-up in an answer's thread used to fail every time: the
bot asked the homeserver to start a thread on an event already in one (400)."""

from __future__ import annotations

from typing import Any

from bot.app import Doryo
from tests.client import JSON, MatrixClient
from tests.conftest import Homeserver
from tests.fakes.llm_script import Answer
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.agent_helpers import ANSWER_KEY, final_answer
from tests.integration.test_agent import prompt_text
from tests.integration.workspace_helpers import new_team, start_session
from tests.poll import eventually

INTERNAL_ERROR = "Something went wrong"


def in_thread(root: str, latest: str, *, reply: bool = False) -> dict[str, Any]:
    """What Element sends for a message in a thread: the root, and the thread's latest event as
    the fallback reply (or a real reply, with `reply`)."""
    return {
        "m.relates_to": {
            "rel_type": "m.thread",
            "event_id": root,
            "is_falling_back": not reply,
            "m.in_reply_to": {"event_id": latest},
        }
    }


def thread_root(event: JSON) -> str | None:
    relates = event["content"].get("m.relates_to", {})
    return relates.get("event_id") if relates.get("rel_type") == "m.thread" else None


def no_internal_error(person: MatrixClient, room: str) -> None:
    bodies = [str(e.get("content", {}).get("body", "")) for e in person.timeline.get(room, [])]
    assert not [b for b in bodies if INTERNAL_ERROR in b], bodies


async def test_follow_ups_in_an_answers_thread_are_answered_there(
    homeserver: Homeserver, bot: Doryo, model_server: FakeOpenAI
) -> None:
    team = await new_team(homeserver, bot, "Threads")
    room = await start_session(team, "Launch")
    model_server.script(Answer("We launch from pad 39A on March 14."))
    question = await team.alice.send_text(room, "@ask when do we launch?")
    first, _ = await final_answer(team.alice, room, question)
    assert thread_root(first) == question

    # Without @ask, right after the bot's answer, as Element sends it.
    model_server.script(Answer("From pad 39A."))
    follow = await team.alice.send_text(
        room, "and from which pad?", **in_thread(question, first["event_id"])
    )
    second, content = await final_answer(team.alice, room, follow)
    assert thread_root(second) == question
    assert content[ANSWER_KEY]["status"] == "done"
    told = prompt_text(model_server)
    assert "when do we launch?" in told and "pad 39A on March 14" in told  # the thread so far

    # With @ask, after someone else's message in the thread.
    chat = await team.alice.send_text(room, "nice", **in_thread(question, second["event_id"]))
    model_server.script(Answer("The budget is 2M."))
    asked = await team.alice.send_text(
        room, "@ask what is the budget?", **in_thread(question, chat)
    )
    third, _ = await final_answer(team.alice, room, asked)
    assert thread_root(third) == question

    # A command in the thread is answered in the thread.
    ping = await team.alice.send_text(room, "!ping", **in_thread(question, third["event_id"]))
    pong = await team.alice.wait_for_reply(room, ping)
    assert thread_root(pong) == question and "Pong" in pong["content"]["body"]
    no_internal_error(team.alice, room)
    # A follow-up is part of the conversation with the bot, not a memory; what people tell each
    # other is.
    await team.alice.send_text(room, "The venue is booked for the launch party.")
    assert bot.ctx.memory is not None
    memory = bot.ctx.memory

    async def remembered() -> list[str] | None:
        # Delivered to the bot and indexed (a client seeing it is not the bot having it).
        await memory.indexer.flush(30)
        rows = await bot.ctx.db.fetch(
            "SELECT text FROM memory_items WHERE workspace_id = $1", team.workspace_id
        )
        texts = [r["text"] for r in rows]
        return texts if "The venue is booked for the launch party." in texts else None

    texts = await eventually(remembered, timeout=60)
    assert texts is not None
    assert "and from which pad?" not in texts and "nice" not in texts


async def test_a_message_in_a_thread_the_bot_never_answered_gets_nothing(
    homeserver: Homeserver, bot: Doryo, model_server: FakeOpenAI
) -> None:
    team = await new_team(homeserver, bot, "Quiet")
    room = await start_session(team, "Chatter")
    root = await team.alice.send_text(room, "lunch at noon?")
    reply = await team.alice.send_text(room, "sure", **in_thread(root, root))
    marker = await team.alice.send_text(room, "!ping")
    await team.alice.wait_for_reply(room, marker)
    await bot.idle(20)
    await team.alice.sync_once(timeout_ms=0)
    answered = [
        e
        for e in team.alice.timeline[room]
        if e["sender"] == bot.config.bot_user_id and thread_root(e) == root
    ]
    assert answered == [] and reply
    assert model_server.requests == []


async def test_in_a_dm_answers_are_plain_replies_and_threads_work(
    homeserver: Homeserver, bot: Doryo, model_server: FakeOpenAI
) -> None:
    team = await new_team(homeserver, bot, "Direct")
    model_server.script(Answer("Here, in the timeline."))
    question = await team.alice.send_text(team.dm, "where do you answer?")
    answer, _ = await final_answer(team.alice, team.dm, question)
    assert answer["content"]["m.relates_to"] == {"m.in_reply_to": {"event_id": question}}

    # A thread started on the bot's answer, as Element's "Reply in thread" does.
    model_server.script(Answer("Here, in the thread."))
    follow = await team.alice.send_text(
        team.dm, "and now?", **in_thread(answer["event_id"], answer["event_id"])
    )
    second, content = await final_answer(team.alice, team.dm, follow)
    assert thread_root(second) == answer["event_id"]
    assert content[ANSWER_KEY]["status"] == "done"
    no_internal_error(team.alice, team.dm)
