"""A fake Anthropic Messages API on 127.0.0.1: the wire format the official `anthropic` SDK
speaks, replaying scripted replies.

    async with FakeAnthropic() as server:
        server.script(Answer("Hi!"), Error(529, "Overloaded"))
        client = anthropic.AsyncAnthropic(base_url=server.base_url, api_key="k", max_retries=0)

Endpoints:
- POST /v1/messages: a `message` JSON object with text and tool_use content blocks, or with
  `"stream": true` the SSE events message_start, content_block_start/delta/stop (text_delta,
  input_json_delta), ping, message_delta (stop_reason, output tokens) and message_stop. Errors
  are `{"type": "error", "error": {"type", "message"}}` with the status, and retry-after for 429.
- GET /v1/models: `server.models`.

Replies come from tests/fakes/llm_script.py (Answer, Error, Hang); see there.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from aiohttp import web

from tests.fakes.llm_script import Answer, Error, Hang, Tokens, estimated_usage
from tests.fakes.server import FakeServer

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def _usage(tokens: Tokens, output: int | None = None) -> dict[str, Any]:
    return {
        "input_tokens": tokens.input - tokens.cached,
        "output_tokens": tokens.output if output is None else output,
        "cache_read_input_tokens": tokens.cached,
        "cache_creation_input_tokens": 0,
    }


class FakeAnthropic(FakeServer):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        """What to give AsyncAnthropic(base_url=...) or a provider's config."""
        return self.url

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_get("/v1/models", self._models)

    async def _models(self, request: web.Request) -> web.Response:
        await self.record(request)
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
            for m in self.models
        ]
        return web.json_response(
            {
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    async def _messages(self, request: web.Request) -> web.StreamResponse:
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
        return web.json_response(self._message(reply, body))

    def _error(self, reply: Error) -> web.Response:
        headers = {"request-id": f"req_{next(self._ids)}"}
        if reply.retry_after is not None:
            headers["retry-after"] = f"{reply.retry_after:g}"
        error_type = reply.error_type or _ERROR_TYPES.get(reply.status, "api_error")
        return web.json_response(
            {"type": "error", "error": {"type": error_type, "message": reply.message}},
            status=reply.status,
            headers=headers,
        )

    def _stop_reason(self, reply: Answer) -> str:
        return reply.finish_reason or ("tool_use" if reply.tool_calls else "end_turn")

    def _tool_id(self, index: int, given: str | None) -> str:
        return given or f"toolu_{next(self._ids):04d}{index}"

    def _message(self, reply: Answer, body: dict[str, Any]) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        if reply.text:
            content.append({"type": "text", "text": reply.text})
        for i, call in enumerate(reply.tool_calls):
            arguments = call.arguments if not isinstance(call.arguments, str) else {}
            content.append(
                {
                    "type": "tool_use",
                    "id": self._tool_id(i, call.id),
                    "name": call.name,
                    "input": dict(arguments),
                }
            )
        return {
            "id": f"msg_{next(self._ids):06d}",
            "type": "message",
            "role": "assistant",
            "model": reply.model or body.get("model", "fake-model"),
            "content": content,
            "stop_reason": self._stop_reason(reply),
            "stop_sequence": None,
            "usage": _usage(estimated_usage(reply, body)),
        }

    async def _stream(
        self, request: web.Request, reply: Answer, body: dict[str, Any]
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        tokens = estimated_usage(reply, body)

        async def send(event: str, data: dict[str, Any]) -> None:
            await self.sse(response, {"type": event, **data}, event=event)

        start = self._message(Answer(model=reply.model, usage=tokens), body)
        start["content"] = []
        start["stop_reason"] = None
        start["usage"] = _usage(tokens, output=1)
        if reply.first_delay:
            await self.hold(reply.first_delay)
        await send("message_start", {"message": start})
        await send("ping", {})
        index = 0
        sent = 0
        if reply.text:
            await send(
                "content_block_start",
                {"index": index, "content_block": {"type": "text", "text": ""}},
            )
            for piece in reply.text_chunks():
                if reply.stall_after is not None and sent >= reply.stall_after:
                    await self.hold(3600)
                if reply.chunk_delay and sent:
                    await asyncio.sleep(reply.chunk_delay)
                delta = {"type": "text_delta", "text": piece}
                await send("content_block_delta", {"index": index, "delta": delta})
                sent += 1
            await send("content_block_stop", {"index": index})
            index += 1
        for i, call in enumerate(reply.tool_calls):
            block = {"type": "tool_use", "id": self._tool_id(i, call.id), "name": call.name}
            await send(
                "content_block_start", {"index": index, "content_block": {**block, "input": {}}}
            )
            for fragment in reply.argument_chunks(call):
                if reply.stall_after is not None and sent >= reply.stall_after:
                    await self.hold(3600)
                if reply.chunk_delay:
                    await asyncio.sleep(reply.chunk_delay)
                delta = {"type": "input_json_delta", "partial_json": fragment}
                await send("content_block_delta", {"index": index, "delta": delta})
                sent += 1
            await send("content_block_stop", {"index": index})
            index += 1
        await send(
            "message_delta",
            {
                "delta": {"stop_reason": self._stop_reason(reply), "stop_sequence": None},
                "usage": {"output_tokens": tokens.output},
            },
        )
        await send("message_stop", {})
        await response.write_eof()
        return response
