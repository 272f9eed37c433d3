"""End to end through a client account: invite the bot, it joins and publishes its commands;
!ping, !help and @ask are answered."""

from __future__ import annotations

from bot.app import Doryo
from bot.rooms.joining import MSC4332_COMMANDS
from tests.conftest import TEST_MODEL_ANSWER, Homeserver
from tests.integration.agent_helpers import final_answer


async def test_invite_join_publish_and_answer(homeserver: Homeserver, bot: Doryo) -> None:
    alice = await homeserver.user("alice")
    bot_id = bot.config.bot_user_id
    # The bot gets power 50 so that it may publish its MSC4332 commands state event.
    room = await alice.create_room(
        name="Planning",
        invite=[bot_id],
        power_level_content_override={"users": {bot_id: 50}},
    )
    await alice.wait_for(
        room,
        lambda e: (
            e["type"] == "m.room.member"
            and e["state_key"] == bot_id
            and e["content"]["membership"] == "join"
        ),
    )
    welcome = await alice.wait_for(
        room, lambda e: e["sender"] == bot_id and e["type"] == "m.room.message"
    )
    assert "!help" in welcome[0]["content"]["body"]

    commands = await alice.wait_for(room, lambda e: e["type"] == MSC4332_COMMANDS)
    assert commands[0]["state_key"] == bot_id
    syntaxes = [c["syntax"] for c in commands[0]["content"]["commands"]]
    assert "ping" in syntaxes and "ask {question}" in syntaxes

    ping = await alice.send_text(room, "!ping")
    pong = await alice.wait_for_reply(room, ping)
    assert pong["content"]["msgtype"] == "m.notice"
    assert pong["content"]["body"].startswith("Pong!")

    help_event = await alice.send_text(room, "!help")
    help_reply = await alice.wait_for_reply(room, help_event)
    assert (
        "`!ws create NAME` — A new workspace (a space) that you host _(anyone)_"
        in help_reply["content"]["body"]
    )
    assert "<code>!ping</code>" in help_reply["content"]["formatted_body"]

    help_ws = await alice.send_text(room, "!help ws")
    help_ws_reply = await alice.wait_for_reply(room, help_ws)
    assert "!ws create NAME" in help_ws_reply["content"]["body"]

    # Questions are answered for a workspace's members: alice makes one (in any room).
    assert (
        "is ready"
        in (await alice.wait_for_reply(room, await alice.send_text(room, "!ws create Plans")))[
            "content"
        ]["body"]
    )
    ask = await alice.send_text(room, "@ask hi")
    answer, content = await final_answer(alice, room, ask)
    assert content["body"].startswith(TEST_MODEL_ANSWER)
    assert content["org.doryo.answer"]["status"] == "done"
    # alice and the bot alone: a direct chat, where an answer is a plain reply in the timeline.
    assert answer["content"]["m.relates_to"] == {"m.in_reply_to": {"event_id": ask}}

    # A command the catalog knows but nothing implements yet still answers.
    connect = await alice.send_text(room, "!connect github")
    assert "Composio" in (await alice.wait_for_reply(room, connect))["content"]["body"]
