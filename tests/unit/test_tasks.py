"""bot/core/tasks.py: stopping a task of one's own never swallows the caller's cancellation, and a
task that fails is logged, not lost."""

from __future__ import annotations

import asyncio

import pytest

from bot.core.tasks import BackgroundTasks, stop


async def test_a_stopped_task_ends_and_the_caller_goes_on() -> None:
    task = asyncio.create_task(asyncio.sleep(60), name="sleeper")
    await stop(task)
    assert task.cancelled()


async def test_the_callers_own_cancellation_is_not_swallowed() -> None:
    release = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await release.wait()  # cleans up for a while before it ends
            raise

    inner = asyncio.create_task(slow_to_stop(), name="slow")
    await asyncio.sleep(0)

    async def caller() -> str:
        await stop(inner)
        return "went on"  # must not: the caller itself was cancelled

    outer = asyncio.create_task(caller())
    await asyncio.sleep(0.01)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    release.set()
    await asyncio.wait([inner])


async def test_a_task_that_fails_as_it_stops_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def fails() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            raise RuntimeError("broken cleanup")

    task = asyncio.create_task(fails(), name="broken")
    await asyncio.sleep(0)
    await stop(task)
    assert "task broken failed" in caplog.text and "broken cleanup" in caplog.text


async def test_cancel_all_cancels_at_once_and_spares_what_starts_after() -> None:
    """The jobs' lease lost and taken again before the loop ran: the old jobs end, the new run
    (spawned right after the call) goes on."""
    tasks = BackgroundTasks()
    old = tasks.spawn(asyncio.sleep(60), "old job")
    ended = tasks.cancel_all()
    new = tasks.spawn(asyncio.sleep(60), "new job")
    await ended
    assert old.cancelled()
    assert not new.done()
    await tasks.cancel_all()
    assert new.cancelled()
