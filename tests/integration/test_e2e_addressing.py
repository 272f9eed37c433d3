"""How people address the bot, end to end: DMs, mentions, replies, unknown commands, and the
MSC4332 commands state event as power levels change."""

from __future__ import annotations

from bot.app import Doryo
from bot.rooms.joining import MSC4332_COMMANDS
from tests.client import MatrixClient, MatrixClientError, replies_to
from tests.conftest import TEST_MODEL_ANSWER, Homeserver
from tests.integration.agent_helpers import final_answer
from tests.integration.workspace_helpers import new_team, start_session
from tests.poll import eventually


async def joined_room(
    homeserver: Homeserver, bot: Doryo, **create: object
) -> tuple[MatrixClient, str]:
    alice = await homeserver.user("alice")
    bot_id = bot.config.bot_user_id
    room = await alice.create_room(invite=[bot_id], **create)
    await alice.wait_for(room, lambda e: e["sender"] == bot_id and e["type"] == "m.room.message")
    return alice, room


async def session_room(homeserver: Homeserver, bot: Doryo) -> tuple[MatrixClient, str]:
    """A session of a workspace alice hosts: where mentions and replies decide what is a
    question (in a DM, everything is)."""
    team = await new_team(homeserver, bot)
    return team.alice, await start_session(team, "Addressing")


async def test_direct_chat_every_message_is_a_question(homeserver: Homeserver, bot: Doryo) -> None:
    alice, dm = await joined_room(homeserver, bot, is_direct=True, preset="trusted_private_chat")
    welcome = alice.timeline[dm][-1]
    assert "every message is a question" in welcome["content"]["body"]
    await alice.wait_for_reply(dm, await alice.send_text(dm, "!ws create Rocket"))
    question = await alice.send_text(dm, "what did we decide yesterday?")
    _, answer = await final_answer(alice, dm, question)
    assert answer["body"].startswith(TEST_MODEL_ANSWER)
    unknown = await alice.send_text(dm, "!fly")
    assert (
        "I don't know the command `fly`"
        in (await alice.wait_for_reply(dm, unknown))["content"]["body"]
    )


async def test_mention_and_reply_are_questions(homeserver: Homeserver, bot: Doryo) -> None:
    alice, room = await session_room(homeserver, bot)
    bot_id = bot.config.bot_user_id
    mention = await alice.send_text(
        room, "Doryo: what's new?", **{"m.mentions": {"user_ids": [bot_id]}}
    )
    first, content = await final_answer(alice, room, mention)
    assert content["body"].startswith(TEST_MODEL_ANSWER)
    # A reply to the bot's message, without a mention (as older clients send it).
    reply = await alice.send_text(
        room, "and then?", **{"m.relates_to": {"m.in_reply_to": {"event_id": first["event_id"]}}}
    )
    _, again = await final_answer(alice, room, reply)
    assert again["body"].startswith(TEST_MODEL_ANSWER)


async def test_not_for_the_bot_gets_no_answer(homeserver: Homeserver, bot: Doryo) -> None:
    alice, room = await session_room(homeserver, bot)
    bot_id = bot.config.bot_user_id
    ignored = [
        await alice.send_text(room, "just chatting"),
        await alice.send_text(room, "!ban @spam:localhost"),  # another bot's command
        await alice.send(room, "m.room.message", {"msgtype": "m.notice", "body": "!ping"}),
        await alice.send(room, "m.room.message", {"msgtype": "m.emote", "body": "!ping"}),
    ]
    # Events of a room are handled in order: once the next ping is answered, the ones before it
    # were handled, and must have produced nothing.
    ping = await alice.send_text(room, "!ping")
    await alice.wait_for_reply(room, ping)
    answered = {replies_to(e) for e in alice.timeline[room] if e["sender"] == bot_id}
    assert not answered & set(ignored)


async def test_an_edit_does_not_run_a_command_again(homeserver: Homeserver, bot: Doryo) -> None:
    alice, room = await joined_room(homeserver, bot)
    ping = await alice.send_text(room, "!ping")
    await alice.wait_for_reply(room, ping)
    await alice.send_text(
        room,
        "* !ping",
        **{
            "m.new_content": {"msgtype": "m.text", "body": "!ping"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": ping},
        },
    )
    marker = await alice.send_text(room, "!ping")
    await alice.wait_for_reply(room, marker)
    assert len([e for e in alice.timeline[room] if replies_to(e) == ping]) == 1


async def test_commands_published_once_the_bot_gets_power(
    homeserver: Homeserver, bot: Doryo
) -> None:
    alice, room = await joined_room(homeserver, bot)
    bot_id = bot.config.bot_user_id
    try:
        await alice.state(room, MSC4332_COMMANDS, bot_id)
        raise AssertionError("published without power")
    except MatrixClientError as e:
        assert e.errcode == "M_NOT_FOUND"
    levels = await alice.state(room, "m.room.power_levels")
    levels["users"][bot_id] = 50
    await alice.set_state(room, "m.room.power_levels", levels)
    published = await alice.wait_for(room, lambda e: e["type"] == MSC4332_COMMANDS)
    assert published[0]["sender"] == bot_id
    row = await bot.ctx.rooms.get(room)
    assert row is not None and row.commands_hash


async def test_msc4332_command_block(homeserver: Homeserver, bot: Doryo) -> None:
    alice, room = await joined_room(homeserver, bot)
    bot_id = bot.config.bot_user_id
    event = await alice.send_text(
        room,
        "!help ws",
        **{
            "m.mentions": {"user_ids": [bot_id]},
            "org.matrix.msc4332.command": {
                "syntax": "help {command}",
                "arguments": {"command": "ws"},
            },
        },
    )
    reply = await alice.wait_for_reply(room, event)
    assert "!ws create NAME" in reply["content"]["body"]


async def test_bot_leaves_when_kicked(homeserver: Homeserver, bot: Doryo) -> None:
    alice, room = await joined_room(homeserver, bot)
    await alice.request(
        "POST", f"/v3/rooms/{room}/kick", {"user_id": bot.config.bot_user_id, "reason": "bye"}
    )

    async def left() -> bool:
        row = await bot.ctx.rooms.get(room)
        return row is not None and row.membership == "leave"

    await eventually(left, timeout=10)
