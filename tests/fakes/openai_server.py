"""A fake OpenAI-compatible server on 127.0.0.1: the wire format the official `openai` SDK (and
Ollama, vLLM, llama.cpp, DeepSeek) speak, replaying scripted replies.

    async with FakeOpenAI() as server:
        server.script(Answer("Hi!"), Error(429, retry_after=0.1))
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        ...
        assert server.last.body["model"] == "llama3.1"

Endpoints:
- POST /v1/chat/completions: a `chat.completion` JSON object, or with `"stream": true` SSE
  `chat.completion.chunk`s (the role first, then content or `delta.tool_calls[i]` fragments,
  then finish_reason), a usage-only last chunk when `stream_options.include_usage` is set, and
  `data: [DONE]`. Errors are `{"error": {"message", "type", "code"}}` with the status, and
  retry-after for 429.
- GET /v1/models: `server.models`.
- POST /v1/embeddings: deterministic vectors of the words (tests/fakes/embeddings_server.py's
  `fake_vector`), `server.embedding_dims` long unless the request asks for `dimensions` (Letta
  embeds archival passages through the same base URL as its chat model).

Replies come from tests/fakes/llm_script.py (Answer, Error, Hang); see there.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
from typing import Any

from aiohttp import web

from tests.fakes.embeddings_server import fake_vector
from tests.fakes.llm_script import Answer, Error, Hang, Tokens, estimated_usage
from tests.fakes.server import FakeServer

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_api_key",
    404: "not_found_error",
    429: "rate_limit_exceeded",
}


def _usage(tokens: Tokens) -> dict[str, Any]:
    return {
        "prompt_tokens": tokens.input,
        "completion_tokens": tokens.output,
        "total_tokens": tokens.input + tokens.output,
        "prompt_tokens_details": {"cached_tokens": tokens.cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


class FakeOpenAI(FakeServer):
    def __init__(self, *, embedding_dims: int = 64, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.embedding_dims = embedding_dims
        self._ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        """What to give AsyncOpenAI(base_url=...) or a provider's config."""
        return f"{self.url}/v1"

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/embeddings", self._embeddings)

    async def _models(self, request: web.Request) -> web.Response:
        await self.record(request)
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models
        ]
        return web.json_response({"object": "list", "data": data})

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = (await self.record(request)).body
        inputs = body.get("input") or []
        if isinstance(inputs, str):
            inputs = [inputs]
        dims = int(body.get("dimensions") or self.embedding_dims)
        data = []
        for index, text in enumerate(inputs):
            vector = fake_vector(str(text), dims)
            embedding: Any = vector.tolist()
            if body.get("encoding_format") == "base64":
                embedding = base64.b64encode(vector.astype("<f4").tobytes()).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(max(1, len(str(text)) // 4) for text in inputs)
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": body.get("model", "fake-embed"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        recorded = await self.record(request)
        reply = self.next_reply()
        if reply is None:
            reply = Error(500, "no scripted reply left")
        if isinstance(reply, Hang):
            await self.hold(reply.seconds)
            return web.Response(status=504)
        if isinstance(reply, Error):
            return self._error(reply)
        body = recorded.body
        if body.get("stream"):
            return await self._stream(request, reply, body)
        if reply.first_delay:
            await self.hold(reply.first_delay)
        return web.json_response(self._completion(reply, body))

    def _error(self, reply: Error) -> web.Response:
        headers = {}
        if reply.retry_after is not None:
            headers["retry-after"] = f"{reply.retry_after:g}"
        error = {
            "message": reply.message,
            "type": reply.error_type or _ERROR_TYPES.get(reply.status, "server_error"),
            "param": None,
            "code": None,
        }
        return web.json_response({"error": error}, status=reply.status, headers=headers)

    def _finish(self, reply: Answer) -> str:
        return reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")

    def _call_id(self, index: int, given: str | None) -> str:
        return given or f"call_{next(self._ids)}_{index}"

    def _completion(self, reply: Answer, body: dict[str, Any]) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": reply.text or None,
            "refusal": None,
        }
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": self._call_id(i, call.id),
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments_json},
                }
                for i, call in enumerate(reply.tool_calls)
            ]
        return {
            "id": f"chatcmpl-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": reply.model or body.get("model", "fake-model"),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self._finish(reply),
                }
            ],
            "usage": _usage(estimated_usage(reply, body)),
            "system_fingerprint": None,
        }

    async def _stream(
        self, request: web.Request, reply: Answer, body: dict[str, Any]
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {
            "id": f"chatcmpl-{next(self._ids)}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": reply.model or body.get("model", "fake-model"),
            "system_fingerprint": None,
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            data = {
                **base,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            if include_usage:
                data["usage"] = None
            return data

        if reply.first_delay:
            await self.hold(reply.first_delay)
        await self.sse(response, chunk({"role": "assistant", "content": "", "refusal": None}))
        sent = 0
        for piece in reply.text_chunks() if reply.text else []:
            if reply.stall_after is not None and sent >= reply.stall_after:
                await self.hold(3600)
            if reply.chunk_delay and sent:
                await asyncio.sleep(reply.chunk_delay)
            await self.sse(response, chunk({"content": piece}))
            sent += 1
        for index, call in enumerate(reply.tool_calls):
            fragments = reply.argument_chunks(call)
            first = {
                "index": index,
                "id": self._call_id(index, call.id),
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            await self.sse(response, chunk({"tool_calls": [first]}))
            for fragment in fragments:
                if reply.stall_after is not None and sent >= reply.stall_after:
                    await self.hold(3600)
                if reply.chunk_delay:
                    await asyncio.sleep(reply.chunk_delay)
                piece = {"index": index, "function": {"arguments": fragment}}
                await self.sse(response, chunk({"tool_calls": [piece]}))
                sent += 1
        await self.sse(response, chunk({}, self._finish(reply)))
        if include_usage:
            await self.sse(
                response,
                {**base, "choices": [], "usage": _usage(estimated_usage(reply, body))},
            )
        await self.sse(response, "[DONE]")
        await response.write_eof()
        return response
