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

from appservice.errors import HomeserverUnavailable
from appservice.matrix import markdown_content
from bot.commands.outputs import inline
from bot.core import strings
from bot.followups.store import Followup
from bot.rooms.direct import direct_room

if TYPE_CHECKING:
    from bot.context import Context

log = logging.getLogger(__name__)

MAX_SLEEP = 60.0
RETRY_AFTER = (30.0, 120.0, 600.0, 1800.0)
"""Seconds before a reminder that could not be posted is tried again; after the last, it is
given up (5 tries over ~42 minutes) and its author told."""


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


async def _failed(ctx: Context, followup: Followup, error: Exception) -> None:
    """The homeserver refused it (the bot is no longer in the room, the recipient's DM cannot
    be made): tried again later, a few times; then dropped, and its author told why."""
    if followup.attempts < len(RETRY_AFTER):
        after = RETRY_AFTER[followup.attempts]
        log.warning(
            "could not post reminder %d (%s); trying again in %gs", followup.id, error, after
        )
        await ctx.followups.try_again(followup.id, after)
        return
    log.error(
        "could not post reminder %d after %d tries: %s", followup.id, followup.attempts + 1, error
    )
    await ctx.followups.mark_failed(followup.id)
    try:
        dm = await direct_room(ctx, followup.created_by)
        text = strings.REMINDER_GAVE_UP.format(
            text=inline(followup.text, 200), tries=followup.attempts + 1, error=error
        )
        await ctx.matrix.send_event(
            dm,
            "m.room.message",
            markdown_content(text, notice=True),
            f"doryo.f.{followup.id}.failed",
        )
    except Exception as e:
        log.warning(
            "could not tell %s that reminder %d failed: %s", followup.created_by, followup.id, e
        )


async def run(ctx: Context, wakeup: asyncio.Event) -> None:
    while True:
        wakeup.clear()
        try:
            for followup in await ctx.followups.claim_due():
                try:
                    event_id = await send(ctx, followup)
                except HomeserverUnavailable as e:
                    # Not the reminder's fault: taken again once the homeserver is back.
                    log.warning("could not post reminder %d yet: %s", followup.id, e)
                    continue
                except Exception as e:
                    await _failed(ctx, followup, e)
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
