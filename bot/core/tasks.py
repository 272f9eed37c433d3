"""The one way to start background work: keeps a reference, logs failures, cancels on stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


def outcome_seen(future: asyncio.Future[Any]) -> None:
    """A done callback for work started ahead of a caller that may not wait for it: its error
    is the caller's to raise, and must not also be logged as never retrieved."""
    if not future.cancelled():
        future.exception()


async def stop(task: asyncio.Task[Any]) -> None:
    """Cancel a task this code started for its own use and wait until it has ended. Its own
    cancellation is expected and its failure is logged; a cancellation of the caller while it
    waits still reaches the caller (asyncio.wait never raises the task's CancelledError, where
    `suppress(CancelledError)` around `await task` would swallow the caller's too)."""
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("task %s failed", task.get_name(), exc_info=error)


class BackgroundTasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        if (error := task.exception()) is not None:
            log.error("background task %s failed", task.get_name(), exc_info=error)

    def __len__(self) -> int:
        return len(self._tasks)

    async def wait(self, timeout: float) -> bool:
        """Wait for running tasks to finish by themselves. True if they all did in time."""
        if not self._tasks:
            return True
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        return not pending

    def cancel_all(self) -> asyncio.Future[list[Any]]:
        """Cancel every task running now, at once (not at the caller's next await: a task
        spawned meanwhile is not one of them); await the result to wait until they ended."""
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        return asyncio.gather(*tasks, return_exceptions=True)
