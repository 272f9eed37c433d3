"""`doryo run --role embedder`: the built-in embedding model, served to the deployment's other
processes, so that the workers that handle events run without it (~400 MB per lane saved in
each; docs/deployment.md).

It speaks the OpenAI embeddings API (`POST /v1/embeddings`, the request's `doryo_lane` choosing
the lane: `interactive` for a question someone waits for, `indexing` at nice 19), and answers
only processes that show the deployment's embedder token (bot.memory.embeddings.embedder_token).
It needs no database, Redis or homeserver. Also GET /health, /ready (the model is loaded) and
/metrics.
"""

from __future__ import annotations

import base64
import logging
import time
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from bot.core.config import Config
from bot.core.errors import ConfigError, DoryoError, EmbeddingError
from bot.core.tokens import carries
from bot.memory.embeddings import (
    BUILTIN_MODELS,
    LANE_FIELD,
    LOCAL_PROVIDER,
    LocalEmbedder,
    embedder_token,
)

log = logging.getLogger(__name__)

MAX_TEXTS = 2048
MAX_TEXT_CHARS = 100_000
MAX_BODY = 32 * 1024 * 1024


def _error(status: int, message: str) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": "invalid_request_error"}}, status=status
    )


class EmbeddingServer:
    def __init__(self, config: Config, *, embedder: LocalEmbedder | None = None) -> None:
        """`embedder`: a loaded model to serve (tests); default: embeddings.model's."""
        provider, name = config.embeddings.model.split("/", 1)
        if provider != LOCAL_PROVIDER or name not in BUILTIN_MODELS:
            raise ConfigError(
                "--role embedder serves a built-in model (local/…), "
                f"not {config.embeddings.model}",
                key="embeddings.model",
            )
        self._name = name
        self._token = embedder_token(config)
        self._owns_embedder = embedder is None
        self._embedder = embedder or LocalEmbedder(
            name,
            batch_size=config.embeddings.batch_size,
            precision=config.embeddings.local_precision,
        )
        self._loaded = embedder is not None
        self._runner: web.AppRunner | None = None
        self.registry = CollectorRegistry()
        self._texts = Counter(
            "doryo_embedder_texts", "Texts embedded, by lane", ["lane"], registry=self.registry
        )
        self._seconds = Histogram(
            "doryo_embedder_request_seconds",
            "Time to answer a request, by lane",
            ["lane"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )

    async def start(self, host: str, port: int) -> None:
        if not self._loaded:
            await self._embedder.load()
            self._loaded = True
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/health", self._health)
        app.router.add_get("/ready", self._health)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, host, port).start()
        except OSError as e:
            await self.stop()
            raise DoryoError(f"cannot listen on {host}:{port} (--port): {e}") from None
        log.info("serving %s/%s on %s:%d (role embedder)", LOCAL_PROVIDER, self._name, host, port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._owns_embedder:
            await self._embedder.aclose()

    async def _health(self, _: web.Request) -> web.Response:
        return web.json_response({"ready": self._loaded}, status=200 if self._loaded else 503)

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _embeddings(self, request: web.Request) -> web.Response:
        if not carries(request, self._token):
            return _error(401, "not a process of this deployment (wrong embedder token)")
        try:
            body: Any = await request.json()
        except ValueError:
            return _error(400, "the body is not JSON")
        if not isinstance(body, dict):
            return _error(400, "the body is not a JSON object")
        if body.get("model") != self._name:
            return _error(404, f"this embedder serves {self._name}, not {body.get('model')!r}")
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if (
            not isinstance(texts, list)
            or not texts
            or len(texts) > MAX_TEXTS
            or not all(isinstance(t, str) and len(t) <= MAX_TEXT_CHARS for t in texts)
        ):
            return _error(
                400,
                f"input: 1 to {MAX_TEXTS} texts of at most {MAX_TEXT_CHARS} characters each",
            )
        lane = body.get(LANE_FIELD, "indexing")
        if lane not in ("interactive", "indexing"):
            return _error(400, f"{LANE_FIELD}: interactive or indexing")
        started = time.perf_counter()
        try:
            vectors = await self._embedder.embed(texts, interactive=lane == "interactive")
        except EmbeddingError as e:
            log.warning("embedding %d texts failed: %s", len(texts), e)
            return _error(503, str(e))
        self._texts.labels(lane).inc(len(texts))
        self._seconds.labels(lane).observe(time.perf_counter() - started)
        as_base64 = body.get("encoding_format") == "base64"
        data = [
            {
                "object": "embedding",
                "index": index,
                "embedding": (
                    base64.b64encode(vector.astype("<f4").tobytes()).decode()
                    if as_base64
                    else vector.tolist()
                ),
            }
            for index, vector in enumerate(vectors)
        ]
        tokens = sum(max(1, len(text) // 4) for text in texts)
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": self._name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )
