"""What the fake LLM servers share: an aiohttp server on 127.0.0.1, a queue of scripted replies,
and the requests it received."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiohttp import web

from tests.fakes.llm_script import Reply


@dataclass(frozen=True, slots=True)
class Recorded:
    """A request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    """Lower-cased names."""
    body: dict[str, Any]

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages", []))

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))


class FakeServer:
    """Base of the fakes: subclasses add routes in `_routes` and render replies."""

    def __init__(self, *, default: Reply | None = None, models: list[str] | None = None) -> None:
        self.default = default
        self.models = models or ["fake-model"]
        self.requests: list[Recorded] = []
        self._queue: deque[Reply] = deque()
        self._runner: web.AppRunner | None = None
        self.port = 0
        # Streams and hangs still open: cancelled on stop so the server shuts down at once.
        self._held: set[asyncio.Task[Any]] = set()

    # --- scripting -----------------------------------------------------------------------

    def script(self, *replies: Reply) -> None:
        """Queue replies for the next requests, in order."""
        self._queue.extend(replies)

    def clear(self) -> None:
        self._queue.clear()
        self.requests.clear()

    @property
    def pending(self) -> int:
        """Scripted replies not used yet."""
        return len(self._queue)

    def next_reply(self) -> Reply | None:
        return self._queue.popleft() if self._queue else self.default

    @property
    def last(self) -> Recorded:
        return self.requests[-1]

    # --- lifecycle -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        app = web.Application()
        self._routes(app)
        # handler_cancellation: a client that gives up (timeout) cancels the held handler.
        self._runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None)
        assert sockets
        self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for task in list(self._held):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- helpers for subclasses ----------------------------------------------------------

    async def record(self, request: web.Request) -> Recorded:
        raw = await request.read()
        body = json.loads(raw) if raw else {}
        headers = {k.lower(): v for k, v in request.headers.items()}
        recorded = Recorded(request.method, request.path, headers, body)
        self.requests.append(recorded)
        return recorded

    async def hold(self, seconds: float) -> None:
        """Sleep in a handler, cancellable by stop()."""
        task = asyncio.current_task()
        assert task is not None
        self._held.add(task)
        try:
            await asyncio.sleep(seconds)
        finally:
            self._held.discard(task)

    @staticmethod
    async def sse(response: web.StreamResponse, data: Any, event: str | None = None) -> None:
        payload = data if isinstance(data, str) else json.dumps(data)
        prefix = f"event: {event}\n" if event else ""
        await response.write(f"{prefix}data: {payload}\n\n".encode())
