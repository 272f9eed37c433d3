"""When typing starts and stops around a request's replies (the timing alone; what the homeserver
makes of it: tests/integration/test_health_presence.py)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from bot.core import strings
from bot.rooms.activity import Activity

DELAY = 0.05


class Recorded:
    """The two calls activity makes, recorded (a stand-in for the homeserver's client)."""

    def __init__(self) -> None:
        self.typing: list[bool] = []
        self.presence: list[str | None] = []

    async def set_typing_no_fail(self, room_id: str, typing: bool, timeout: int = 0) -> None:
        self.typing.append(typing)

    async def set_presence_no_fail(self, presence: str, status_msg: str | None = None) -> None:
        self.presence.append(status_msg)


def activity() -> tuple[Activity, Recorded]:
    matrix = Recorded()
    return Activity(cast(Any, matrix), delay=DELAY, linger=60), matrix


async def test_a_reply_on_its_way_when_the_work_ends_means_no_typing() -> None:
    work, matrix = activity()
    async with work.busy("!room") as busy:
        with busy.replying():
            await asyncio.sleep(DELAY * 3)  # the homeserver is slow to take it
    await asyncio.sleep(DELAY * 2)
    assert matrix.typing == [] and work.working == 0


async def test_work_going_on_after_a_reply_shows_typing_a_delay_later() -> None:
    work, matrix = activity()
    async with work.busy("!room") as busy:
        with busy.replying():
            await asyncio.sleep(DELAY / 5)
        await asyncio.sleep(DELAY / 2)
        assert matrix.typing == []  # the wait started again after the reply
        await asyncio.sleep(DELAY * 2)
        assert matrix.typing == [True] and work.working == 1
    assert matrix.typing == [True, False] and work.working == 0
    await work.close()


async def test_overlapping_replies_start_one_wait() -> None:
    """An answer's first message and an edit on their way at once: one wait, one notice, turned
    off once (a wait per reply showed typing twice and left the count of work at one, so the
    busy status would never be cleared)."""
    work, matrix = activity()
    async with work.busy("!room") as busy:
        with busy.replying():
            with busy.replying():
                await asyncio.sleep(DELAY / 5)
            await asyncio.sleep(DELAY * 2)
            assert matrix.typing == []  # one reply is still on its way
        await asyncio.sleep(DELAY * 3)
    await asyncio.sleep(DELAY * 2)
    assert matrix.typing == [True, False] and work.working == 0
    assert matrix.presence == [strings.BUSY_STATUS]
    await work.close()


async def test_typing_shown_stays_through_later_replies() -> None:
    work, matrix = activity()
    async with work.busy("!room") as busy:
        await asyncio.sleep(DELAY * 2)
        with busy.replying():
            await asyncio.sleep(DELAY / 5)
        await asyncio.sleep(DELAY * 2)
    assert matrix.typing == [True, False]
    await work.close()


async def test_typing_stays_while_another_request_of_the_room_goes_on() -> None:
    """A room's requests may be worked on at once (an answer still being written while the next
    one is handled): the first to end does not turn off the typing the other still shows."""
    work, matrix = activity()
    async with work.busy("!room"):
        async with work.busy("!room"):
            await asyncio.sleep(DELAY * 2)
        assert matrix.typing == [True, True]  # the second request ended: still typing
        async with work.busy("!other"):
            await asyncio.sleep(DELAY * 2)
        assert matrix.typing == [True, True, True, False]  # another room's is its own
    assert matrix.typing == [True, True, True, False, False] and work.working == 0
    await work.close()
