"""Who said it, by the name people use: a member's display name (from the rooms' member events)
lets a question that names them find what they said as "I …", in memory search and in what
`@ask` puts before the model."""

from __future__ import annotations

from urllib.parse import quote

from bot.app import Doryo
from tests.conftest import Homeserver
from tests.fakes.llm_script import Answer
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.agent_helpers import final_answer
from tests.integration.test_actions import team_with_member
from tests.integration.test_agent import indexed
from tests.poll import eventually


async def test_a_person_named_by_their_display_name_is_found(
    homeserver: Homeserver, bot: Doryo, model_server: FakeOpenAI
) -> None:
    team, session, bob = await team_with_member(homeserver, bot)
    path = f"/v3/profile/{quote(bob.user_id)}/displayname"
    await bob.request("PUT", path, {"displayname": "Zed Quinn"})

    async def known() -> bool:
        name = await bot.ctx.db.fetchval(
            "SELECT displayname FROM room_members WHERE room_id = $1 AND user_id = $2",
            session,
            bob.user_id,
        )
        return bool(name == "Zed Quinn")

    await eventually(known, timeout=30)
    # The same words from both, Alice's first: by meaning alike, the older one would win; only
    # who said it tells them apart.
    said = "I drive an old Volvo these days, great on long trips."
    alice_said = await team.alice.send_text(session, said)
    bob_said = await bob.send_text(session, said)
    await indexed(bot, alice_said, bob_said)
    assert bot.ctx.memory is not None
    hits = await bot.ctx.memory.search(team.workspace_id, "What car does Zed drive?", k=1)
    assert [h.item.event_id for h in hits] == [bob_said]

    model_server.script(Answer("An old Volvo [1]."))
    question = await team.alice.send_text(session, "@ask what car does Zed drive?")
    _, content = await final_answer(team.alice, session, question)
    block = content["org.doryo.answer"]
    assert block["sources"][:1] == [bob_said]
    # What the model was shown: Bob's memory first; Alice's same words are a memory of their
    # own (she drives one too) and the message just before his: listed once.
    assert block["shown"][0] == bob_said and block["shown"].count(alice_said) == 1
    # A display name is a claim anyone makes for themselves: it may rank their own messages,
    # never speak for them. The model is told who said it by Matrix ID.
    told = "\n".join(str(m.get("content")) for m in model_server.last.messages)
    first = next(line for line in told.splitlines() if line.startswith("[1]"))
    assert bob.user_id[1:].split(":")[0] in first and "Quinn" not in told


async def test_when_did_a_person_do_something_gets_their_message_with_its_date(
    homeserver: Homeserver, bot: Doryo, model_server: FakeOpenAI
) -> None:
    team, session, bob = await team_with_member(homeserver, bot)
    said = "I finally ran my first marathon today, my legs are gone!"
    alice_said = await team.alice.send_text(session, said)
    bob_said = await bob.send_text(session, said)
    await indexed(bot, alice_said, bob_said)
    for event, day in ((alice_said, "2026-03-08"), (bob_said, "2026-05-17")):
        await bot.ctx.db.execute(
            "UPDATE memory_items SET created_at = $2::text::timestamptz WHERE event_id = $1",
            event,
            f"{day} 18:00+00",
        )

    model_server.script(Answer("On 17 May [1]."))
    question = await team.alice.send_text(session, "@ask when did Bob run a marathon?")
    _, content = await final_answer(team.alice, session, question)
    memories = next(
        str(m["content"])
        for m in model_server.last.messages
        if str(m.get("content")).startswith("Memories of this workspace")
    )
    first = memories.splitlines()[1]
    assert first.startswith("[1]") and "2026-05-17" in first and "bob" in first, memories
    assert content["org.doryo.answer"]["sources"] == [bob_said]


async def test_a_memory_comes_with_the_messages_around_it(
    homeserver: Homeserver, bot: Doryo, model_server: FakeOpenAI
) -> None:
    team, session, bob = await team_with_member(homeserver, bot)
    asked = await bob.send_text(session, "How was your marathon on Sunday?")
    answered = await team.alice.send_text(session, "I finished in 4 hours, my legs are gone!")
    await indexed(bot, asked, answered)

    model_server.script(Answer("About 4 hours [1]."))
    question = await bob.send_text(session, "@ask how long did the marathon take?")
    _, content = await final_answer(bob, session, question)
    memories = next(
        str(m["content"])
        for m in model_server.last.messages
        if str(m.get("content")).startswith("Memories of this workspace")
    )
    lines = memories.splitlines()
    hit = next(i for i, line in enumerate(lines) if "How was your marathon on Sunday?" in line)
    assert lines[hit].startswith("[") and "(just after)" in lines[hit + 1]
    assert "I finished in 4 hours" in lines[hit + 1]
    assert answered in content["org.doryo.answer"]["shown"]
