"""`!catchup` on the real Synapse: read receipts reach the bot as ephemeral events, and a
member's catch-up covers what they missed — not what they had read, not what they wrote."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from bot.app import Doryo
from tests.client import MatrixClient
from tests.conftest import Homeserver
from tests.fakes.llm_script import Answer, Error
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.test_actions import team_with_member
from tests.integration.workspace_helpers import command
from tests.poll import eventually


def chat_prompts(model: FakeOpenAI) -> list[str]:
    return [
        "\n".join(str(m.get("content")) for m in r.messages)
        for r in model.requests
        if r.path.endswith("/chat/completions")
    ]


async def read_up_to(bot: Doryo, person: MatrixClient, room: str, event_id: str) -> None:
    """A read receipt, as a client sends it when the person has seen `event_id`; returns
    once the bot has it."""
    await person.request("POST", f"/v3/rooms/{quote(room)}/receipt/m.read/{quote(event_id)}", {})

    async def stored() -> Any:
        marker = await bot.ctx.read_markers.get(room, person.user_id)
        return marker is not None and marker.event_id == event_id

    await eventually(stored, timeout=20)


async def test_catchup_covers_what_was_missed_and_not_what_was_read(
    homeserver: Homeserver, bot: Doryo, model_server: FakeOpenAI
) -> None:
    team, session, bob = await team_with_member(homeserver, bot)
    seen = [await team.alice.send_text(session, f"Old point {n}: already read") for n in range(5)]
    await read_up_to(bot, bob, session, seen[-1])
    await bob.send_text(session, "bob's own message is not news to bob")
    missed = [
        await team.alice.send_text(session, f"New point {n}: the pad moved to 39{n}")
        for n in range(30)
    ]
    await bot.idle(60)
    model_server.script(Answer("- The pad moved, several times [1] [30] [99]."))

    answer = await command(bob, session, "!catchup")

    assert "30 messages since you last read here" in answer, answer
    prompt = chat_prompts(model_server)[-1]
    assert all(f"New point {n}:" in prompt for n in range(30))
    assert "Old point" not in prompt and "bob's own message" not in prompt
    # Its citations are links to the messages they number; a made-up number is not linked.
    assert f"/{missed[0]}" in answer and f"/{missed[29]}" in answer
    assert "[99]" in answer and "[[99]]" not in answer

    # Read to the end: nothing new.
    await read_up_to(bot, bob, session, missed[-1])
    assert "Nothing new from others here" in await command(bob, session, "!catchup")
    # A window covers what it covers, read or not.
    model_server.script(Answer("- Everything [1]."))
    assert "35 messages since 2 hours ago" in await command(bob, session, "!catchup 2h")
    assert "Usage: `!catchup`" in await command(bob, session, "!catchup 2 fortnights")


async def test_catchup_without_a_model_lists_what_matters(
    homeserver: Homeserver, bot: Doryo, model_server: FakeOpenAI
) -> None:
    team, session, bob = await team_with_member(homeserver, bot)
    name = bob.user_id[1:].split(":")[0]
    for n in range(12):
        await team.alice.send_text(session, f"Filler {n}")
    asked = await team.alice.send_text(session, f"{name}, can you review the launch plan?")
    for n in range(12, 20):
        await team.alice.send_text(session, f"Filler {n}")
    await bot.idle(60)
    model_server.default = Error(500, "overloaded")

    answer = await command(bob, session, "!catchup")

    assert "21 messages since the session began" in answer, answer
    assert "No model answered" in answer
    assert f"/{asked}" in answer  # the message addressed to bob, though not among the latest
    assert "Filler 19" in answer and "Filler 0" not in answer


async def test_catchup_in_the_dm_covers_every_session_busiest_first(
    homeserver: Homeserver, bot: Doryo, model_server: FakeOpenAI
) -> None:
    team, session, bob = await team_with_member(homeserver, bot)
    quiet = await command(team.alice, team.dm, "!session start Quiet")
    assert "Quiet" in quiet
    for n in range(4):
        await team.alice.send_text(session, f"Busy {n}")
    await bot.idle(60)
    model_server.script(Answer("- Busy things [1]."))
    bob_dm = await bob.create_room(
        invite=[bot.config.bot_user_id], is_direct=True, preset="trusted_private_chat"
    )
    await bob.wait_for(bob_dm, lambda e: e["sender"] == bot.config.bot_user_id)

    answer = await command(bob, bob_dm, "!catchup")

    assert "across 1 of your sessions" in answer, answer  # bob is not in Quiet
    assert "4 messages since the session began" in answer
    # In a room that is neither a session nor a DM (three people): said where it works.
    other = await bob.create_room(invite=[bot.config.bot_user_id, team.alice.user_id])
    await team.alice.join(other)
    await bob.wait_for(other, lambda e: e["sender"] == bot.config.bot_user_id)
    await bob.send_text(other, "!catchup")
    reply = await bob.wait_for(
        other, lambda e: "works in a session" in e.get("content", {}).get("body", "")
    )
    assert reply


async def test_a_member_removed_from_the_space_catches_up_on_nothing(
    homeserver: Homeserver, bot: Doryo, model_server: FakeOpenAI
) -> None:
    """Kicked from the space but left in the session (the setting off): the room's past after
    the kick is not theirs to have summarised — in the session nor from the DM."""
    team, session, bob = await team_with_member(homeserver, bot)
    await command(team.alice, session, "!ws settings remove_from_sessions off")
    bob_dm = await bob.create_room(
        invite=[bot.config.bot_user_id], is_direct=True, preset="trusted_private_chat"
    )
    await bob.wait_for(bob_dm, lambda e: e["sender"] == bot.config.bot_user_id)
    await team.alice.request(
        "POST", f"/v3/rooms/{quote(team.space)}/kick", {"user_id": bob.user_id}
    )
    await bot.idle(20)
    await team.alice.send_text(session, "The vault code is 7431")
    await bot.idle(20)
    model_server.script(Answer("- The vault code [1]."))

    assert "Only members" in await command(bob, session, "!catchup")
    assert "Nothing new" in await command(bob, bob_dm, "!catchup")
    assert not chat_prompts(model_server), "a removed member's catch-up reached the model"
