"""A fake OpenAI-compatible embeddings endpoint (`POST /v1/embeddings`) on 127.0.0.1, for the
official `openai` SDK pointed at its base_url.

Vectors are deterministic and meaningful enough for tests: a hashed bag of the text's words
(texts sharing words are close). `dimensions` in the request is honoured. It can be told to fail
(an HTTP status) or to answer slowly, and it records what it was asked.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from types import TracebackType
from typing import Any

import numpy as np
from aiohttp import web

_WORD = re.compile(r"\w+")


def fake_vector(text: str, dims: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    vector = np.zeros(dims, dtype=np.float32)
    for word in _WORD.findall(text.lower()) or [""]:
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        index = int.from_bytes(digest[:4], "little") % dims
        sign = 1.0 if digest[4] & 1 else -1.0
        vector[index] += sign
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm else vector


class FakeEmbeddings:
    def __init__(self, *, dims: int = 64, model: str = "fake-embed") -> None:
        self.dims = dims
        self.model = model
        self.fail_status: int | None = None
        """Answer every request with this HTTP status (None: answer normally)."""
        self.delay = 0.0
        self.requests: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What an OpenAI-compatible provider's base_url is set to."""
        return f"{self.url}/v1"

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_status is not None:
            return web.json_response(
                {"error": {"message": "fake failure", "type": "server_error"}},
                status=self.fail_status,
            )
        inputs = body["input"]
        if isinstance(inputs, str):
            inputs = [inputs]
        if any(not text for text in inputs):
            return web.json_response(
                {"error": {"message": "input cannot be empty", "type": "invalid_request"}},
                status=400,
            )
        dims = int(body.get("dimensions") or self.dims)
        data = []
        for index, text in enumerate(inputs):
            vector = fake_vector(text, dims)
            embedding: Any = vector.tolist()
            if body.get("encoding_format") == "base64":
                embedding = base64.b64encode(vector.astype("<f4").tobytes()).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(len(_WORD.findall(t)) for t in inputs)
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": body.get("model", self.model),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/embeddings", self._embeddings)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeEmbeddings:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
