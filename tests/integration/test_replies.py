"""Replies are sent once per event, however many times the event is handled."""

from __future__ import annotations

from bot.app import Doryo
from bot.core.replies import TXN_KEY, Replier
from tests.conftest import Homeserver


async def room_with_bot(homeserver: Homeserver, bot: Doryo) -> tuple[str, object]:
    alice = await homeserver.user("alice")
    room = await alice.create_room(invite=[bot.config.bot_user_id])
    await alice.wait_for(
        room, lambda e: e["sender"] == bot.config.bot_user_id and e["type"] == "m.room.message"
    )
    return room, alice


async def test_handled_again_sends_nothing_new(homeserver: Homeserver, bot: Doryo) -> None:
    room, _ = await room_with_bot(homeserver, bot)
    first = Replier(bot.ctx.matrix, bot.ctx.sent, room, "$question")
    sent = [await first.send_notice("one"), await first.send_notice("two")]
    again = Replier(bot.ctx.matrix, bot.ctx.sent, room, "$question", retried=True)
    assert [await again.send_notice("one"), await again.send_notice("two")] == sent
    # A third answer on the second attempt is new, and sent.
    assert await again.send_notice("three") not in sent


async def test_a_send_whose_answer_was_lost_is_found(homeserver: Homeserver, bot: Doryo) -> None:
    room, alice = await room_with_bot(homeserver, bot)
    lost = Replier(bot.ctx.matrix, bot.ctx.sent, room, "$lost")
    txn_id = lost.next_txn_id()
    # The homeserver made the event, but the bot never heard back (nothing recorded).
    made = await bot.ctx.matrix.send_event(
        room,
        "m.room.message",
        {"msgtype": "m.notice", "body": "answer", TXN_KEY: txn_id},
        txn_id="some-other-txn",
    )
    retry = Replier(bot.ctx.matrix, bot.ctx.sent, room, "$lost", retried=True)
    assert await retry.send_notice("answer") == made
    await alice.sync_once(timeout_ms=0)
    answers = [e for e in alice.timeline[room] if e["content"].get("body") == "answer"]
    assert len(answers) == 1
