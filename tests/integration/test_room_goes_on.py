"""A room's events are started in order, one at a time; an event whose handling lets its room go
on (bot.core.dispatcher.room_may_go_on: an answer the model writes for seconds) is finished beside
the room's next events, is marked done only when it ends, and keeps the room's lease until then —
so no other process can handle it a second time."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg

from bot.app import Doryo
from bot.core.dispatcher import MAX_GOING_ON, room_may_go_on
from bot.core.leases import Leases
from bot.core.metrics import Metrics
from tests.integration.test_transactions import put, room_event, stored
from tests.poll import eventually


async def states(bot: Doryo, *events: dict[str, Any]) -> list[str]:
    return [r["state"] for r in await stored(bot, *(e["event_id"] for e in events))]


async def test_an_event_that_lets_its_room_go_on_ends_beside_the_next_ones(bot: Doryo) -> None:
    room = f"!goes{uuid.uuid4().hex[:6]}:localhost"
    first, second, third = (room_event(n, room) for n in (1, 2, 3))
    may_go_on, finish = asyncio.Event(), asyncio.Event()
    calls: list[str] = []
    original = bot.ctx.workspaces.by_space  # asked once for every event, as it is handled

    async def first_is_slow(room_id: str) -> Any:
        if room_id == room:
            calls.append(room_id)
            if len(calls) == 1:
                await may_go_on.wait()  # the part that must happen in the room's order
                room_may_go_on()
                room_may_go_on()  # twice is once
                await finish.wait()  # the slow rest
        return await original(room_id)

    async def started() -> bool:
        return len(calls) == 1

    bot.ctx.workspaces.by_space = first_is_slow  # type: ignore[method-assign]
    try:
        await put(bot, uuid.uuid4().hex, {"events": [first, second, third]})
        await eventually(started)
        await asyncio.sleep(0.5)
        assert len(calls) == 1, "the next events waited for the first one's ordered part"
        may_go_on.set()

        async def next_ones_done() -> bool:
            return await states(bot, first, second, third) == ["pending", "done", "done"]

        await eventually(next_ones_done, timeout=10)
        assert len(calls) == 3  # each handled once

        # The room is still this process's: another cannot take it (and the first event).
        other = Leases(bot._database_url, Metrics())
        await other.open()
        try:
            assert not await other.take_room(room)
            finish.set()
            await bot.idle(10)
            assert await states(bot, first, second, third) == ["done", "done", "done"]
            assert len(calls) == 3  # the first was not started again as it ended
            assert await other.take_room(room)
            await other.release_room(room)
        finally:
            await other.close()
    finally:
        finish.set()
        bot.ctx.workspaces.by_space = original  # type: ignore[method-assign]


async def test_an_event_that_went_on_and_failed_for_the_database_is_tried_again(
    bot: Doryo,
) -> None:
    """An event that let its room go on and then hit the database being away stays pending, and
    the room's worker tries it again (it is not lost until the next start)."""
    room = f"!again{uuid.uuid4().hex[:6]}:localhost"
    first, second = room_event(1, room), room_event(2, room)
    calls: list[str] = []
    original = bot.ctx.workspaces.by_space
    original_done = bot.dispatcher._store.mark_done
    failed_once: list[int] = []

    async def goes_on(room_id: str) -> Any:
        if room_id == room:
            calls.append(room_id)
            if len(calls) == 1:
                room_may_go_on()
        return await original(room_id)

    async def mark_done(event_id: int) -> None:
        sql = "SELECT id FROM inbox_events WHERE event_id = $1"
        if not failed_once and event_id == await bot.ctx.db.fetchval(sql, first["event_id"]):
            failed_once.append(event_id)
            raise asyncpg.PostgresConnectionError("the database went away")
        await original_done(event_id)

    bot.ctx.workspaces.by_space = goes_on  # type: ignore[method-assign]
    bot.dispatcher._store.mark_done = mark_done  # type: ignore[method-assign]
    try:
        await put(bot, uuid.uuid4().hex, {"events": [first, second]})

        async def both_done() -> bool:
            return await states(bot, first, second) == ["done", "done"]

        await eventually(both_done, timeout=15)
    finally:
        bot.ctx.workspaces.by_space = original  # type: ignore[method-assign]
        bot.dispatcher._store.mark_done = original_done  # type: ignore[method-assign]
    assert len(failed_once) == 1
    assert len(calls) == 3  # the first handled again after its failure, the second once


async def test_a_room_has_at_most_a_few_events_going_on(bot: Doryo) -> None:
    """A member sending request after request that each goes on (an @ask flood) does not start
    work without bound: the room's worker waits for one to end once MAX_GOING_ON go on."""
    room = f"!flood{uuid.uuid4().hex[:6]}:localhost"
    events = [room_event(n, room) for n in range(MAX_GOING_ON + 3)]
    finish = asyncio.Event()
    calls: list[str] = []
    original = bot.ctx.workspaces.by_space

    async def each_goes_on(room_id: str) -> Any:
        if room_id == room:
            calls.append(room_id)
            room_may_go_on()
            await finish.wait()
        return await original(room_id)

    async def started(count: int) -> bool:
        return len(calls) == count

    bot.ctx.workspaces.by_space = each_goes_on  # type: ignore[method-assign]
    try:
        await put(bot, uuid.uuid4().hex, {"events": events})
        await eventually(lambda: started(MAX_GOING_ON))
        await asyncio.sleep(0.5)
        assert len(calls) == MAX_GOING_ON  # the next waits for one of these to end
        finish.set()
        await bot.idle(10)
        assert len(calls) == len(events)
        assert await states(bot, *events) == ["done"] * len(events)
    finally:
        finish.set()
        bot.ctx.workspaces.by_space = original  # type: ignore[method-assign]
