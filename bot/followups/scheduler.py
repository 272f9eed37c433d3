"""Posts follow-up reminders when they are due: in their room, or in the recipient's DM.

The loop sleeps until the next due reminder (at most a minute, and it is woken when one is
added). Each send has a transaction ID of its own, recorded once sent, so a reminder taken again
after a crash is posted once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from appservice.matrix import markdown_content
from bot import strings
from bot.followups.store import Followup
from bot.rooms import direct_room

if TYPE_CHECKING:
    from bot.context import Context

log = logging.getLogger(__name__)

MAX_SLEEP = 60.0


async def send(ctx: Context, followup: Followup) -> str:
    txn_id = f"doryo.f.{followup.id}"
    if (sent := await ctx.sent.get(txn_id)) is not None:
        return sent
    if followup.recipient:
        room_id = await direct_room(ctx, followup.recipient)
        mentions = [followup.recipient]
    else:
        room_id, mentions = followup.room_id, []
    text = strings.REMINDER.format(text=followup.text, by=followup.created_by)
    event_id = await ctx.matrix.send_event(
        room_id, "m.room.message", markdown_content(text, mentions=mentions), txn_id
    )
    await ctx.sent.record(txn_id, room_id, event_id)
    return event_id


async def run(ctx: Context, wakeup: asyncio.Event) -> None:
    while True:
        wakeup.clear()
        try:
            for followup in await ctx.followups.claim_due():
                try:
                    event_id = await send(ctx, followup)
                except Exception:
                    log.exception("could not post reminder %d; trying again later", followup.id)
                    continue
                await ctx.followups.mark_sent(followup.id, event_id)
            due = await ctx.followups.next_due()
        except Exception:
            log.exception("the reminder loop failed; trying again in a minute")
            due = None
        delay = MAX_SLEEP
        if due is not None:
            delay = min(MAX_SLEEP, max(0.0, (due - datetime.now(UTC)).total_seconds()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await wakeup.wait()
