"""A fake Letta server on 127.0.0.1: the REST endpoints letta-client 1.12 calls, in its wire
format, with scripted agent turns.

    async with FakeLetta() as letta:
        letta.script(CallTool("create_task", {"title": "Ship"}), Say("Done: the task exists."))
        client = AsyncLetta(base_url=letta.url, api_key="k")
        ...
        assert letta.tool_returns[0]["tool_call_id"] == ...

Endpoints (paths as letta_client/resources/agents/*.py build them):
- POST /v1/agents/ (AgentState: id, name, agent_type, system, blocks, memory.blocks,
  llm_config, embedding_config, tools, sources, tags, metadata), GET /v1/agents/ (a JSON array,
  filtered by repeated `tags` with `match_all_tags`), GET /v1/agents/{id}
- PATCH /v1/agents/{id}/core-memory/blocks/{label} (BlockResponse)
- POST /v1/agents/{id}/archival-memory (a list of Passage), GET
  /v1/agents/{id}/archival-memory/search?query= ({count, results: [{id, content, timestamp}]})
- POST /v1/agents/{id}/messages (and .../messages/stream): with `"streaming": true` an SSE
  stream of LettaStreamingResponse items (`data: {...}` lines: a `ping` first with
  `include_pings`, a tool_return_message for each tool result the request brought,
  assistant_message fragments sharing one id when `stream_tokens`, approval_request_message,
  stop_reason, usage_statistics) ending with `data: [DONE]`; otherwise a LettaResponse ({messages,
  stop_reason, usage}).

The shapes are those docs/letta-wire.md records from the real server (letta 0.16.8): text the
model writes alongside a tool call is not returned (CallTool has no text), a denial comes back as
an error tool_return_message, a message while a call waits is refused with 409
`{"detail": {"code": "PENDING_APPROVAL", …}}`.

Turns follow the real server's rules for client-side tools: a call of a tool from the request's
`client_tools` stops the turn with stop_reason `requires_approval` after an
approval_request_message; until it is answered (a `tool_return` message, or an `approval`
message with tool returns or `approve: false`), the agent refuses other messages (HTTP 409).
What came back is kept in `tool_returns` and `denials`; `waiting` holds the calls not answered yet.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tests.fakes.server import FakeServer


@dataclass(frozen=True, slots=True)
class Say:
    """The agent answers with text (streamed in `chunks` pieces)."""

    text: str
    chunks: int = 4
    chunk_delay: float = 0.0


@dataclass(frozen=True, slots=True)
class CallTool:
    """The agent calls a client-side tool (Letta returns no text alongside it)."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    call_id: str | None = None
    text = ""


@dataclass(frozen=True, slots=True)
class Fail:
    status: int = 500
    detail: str = "internal server error"


LettaReply = Say | CallTool | Fail


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4()}"


class FakeLetta(FakeServer):
    def __init__(self, *, default: LettaReply | None = None) -> None:
        super().__init__()
        self.letta_default: LettaReply = default or Say("Letta here.")
        self.replies: list[LettaReply] = []
        self.agents: dict[str, dict[str, Any]] = {}
        self.passages: dict[str, list[dict[str, Any]]] = {}
        self.block_updates: list[tuple[str, str, dict[str, Any]]] = []
        self.turns: list[dict[str, Any]] = []
        """Bodies of the messages requests, in order."""
        self.tool_returns: list[dict[str, Any]] = []
        self.denials: list[dict[str, Any]] = []
        self.waiting: dict[str, set[str]] = {}
        """Agent → tool call IDs awaiting a return."""
        self._calls = itertools.count(1)
        self._request_ids: dict[str, str] = {}

    def script(self, *replies: LettaReply) -> None:  # type: ignore[override]
        self.replies.extend(replies)

    def _next(self) -> LettaReply:
        return self.replies.pop(0) if self.replies else self.letta_default

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/agents/", self._create_agent)
        app.router.add_get("/v1/agents/", self._list_agents)
        app.router.add_get("/v1/agents/{agent_id}", self._get_agent)
        app.router.add_patch(
            "/v1/agents/{agent_id}/core-memory/blocks/{label}", self._update_block
        )
        app.router.add_post("/v1/agents/{agent_id}/archival-memory", self._add_passage)
        app.router.add_get("/v1/agents/{agent_id}/archival-memory/search", self._search_passages)
        app.router.add_post("/v1/agents/{agent_id}/messages", self._messages)
        app.router.add_post("/v1/agents/{agent_id}/messages/stream", self._messages)

    # --- agents ----------------------------------------------------------------------------

    def _agent(self, request: web.Request) -> dict[str, Any]:
        agent = self.agents.get(request.match_info["agent_id"])
        if agent is None:
            raise web.HTTPNotFound(
                text=json.dumps({"detail": "Agent not found"}), content_type="application/json"
            )
        return agent

    async def _create_agent(self, request: web.Request) -> web.Response:
        body = (await self.record(request)).body
        agent_id = _id("agent")
        blocks = [
            {
                "id": _id("block"),
                "label": b["label"],
                "value": b["value"],
                "limit": b.get("limit", 5000),
                "description": b.get("description"),
                "read_only": False,
                "metadata": {},
            }
            for b in body.get("memory_blocks", [])
        ]
        handle = body.get("model") or "openai/gpt-4o-mini"
        agent = {
            "id": agent_id,
            "name": body.get("name") or agent_id,
            "description": body.get("description"),
            "agent_type": body.get("agent_type") or "letta_v1_agent",
            "system": body.get("system") or "You are a helpful self-improving agent.",
            "blocks": blocks,
            "memory": {"blocks": blocks, "file_blocks": [], "agent_type": "letta_v1_agent"},
            "llm_config": {
                "model": handle.split("/", 1)[-1],
                "model_endpoint_type": "openai",
                "context_window": 128000,
                "handle": handle,
            },
            "embedding_config": {
                "embedding_model": "text-embedding-3-small",
                "embedding_endpoint_type": "openai",
                "embedding_dim": 1536,
                "handle": body.get("embedding") or "openai/text-embedding-3-small",
            },
            "tools": [],
            "sources": [],
            "tags": body.get("tags") or [],
            "metadata": body.get("metadata") or {},
            "created_at": _now(),
        }
        self.agents[agent_id] = agent
        return web.json_response(agent)

    async def _list_agents(self, request: web.Request) -> web.Response:
        await self.record(request)
        wanted = request.query.getall("tags", [])
        match_all = request.query.get("match_all_tags", "false") == "true"
        found = []
        for agent in self.agents.values():
            tags = set(agent["tags"])
            hit = all(t in tags for t in wanted) if match_all else any(t in tags for t in wanted)
            if hit or not wanted:
                found.append(agent)
        limit = int(request.query.get("limit", "50"))
        return web.json_response(found[:limit])

    async def _get_agent(self, request: web.Request) -> web.Response:
        await self.record(request)
        return web.json_response(self._agent(request))

    async def _update_block(self, request: web.Request) -> web.Response:
        body = (await self.record(request)).body
        agent = self._agent(request)
        label = request.match_info["label"]
        block = next((b for b in agent["blocks"] if b["label"] == label), None)
        if block is None:
            raise web.HTTPNotFound(
                text=json.dumps({"detail": f"Block {label} not found"}),
                content_type="application/json",
            )
        block.update({k: v for k, v in body.items() if k in ("value", "limit", "description")})
        self.block_updates.append((agent["id"], label, body))
        return web.json_response(block)

    async def _add_passage(self, request: web.Request) -> web.Response:
        body = (await self.record(request)).body
        agent = self._agent(request)
        passage = {
            "id": _id("passage"),
            "text": body["text"],
            "tags": body.get("tags"),
            "created_at": body.get("created_at") or _now(),
            "archive_id": _id("archive"),
        }
        self.passages.setdefault(agent["id"], []).append(passage)
        return web.json_response([passage])

    async def _search_passages(self, request: web.Request) -> web.Response:
        await self.record(request)
        agent = self._agent(request)
        words = set(request.query.get("query", "").lower().split())
        results = [
            {"id": p["id"], "content": p["text"], "timestamp": p["created_at"], "tags": p["tags"]}
            for p in self.passages.get(agent["id"], [])
            if words & set(p["text"].lower().split())
        ]
        return web.json_response({"count": len(results), "results": results})

    # --- messages --------------------------------------------------------------------------

    def _take_returns(
        self, agent_id: str, messages: list[dict[str, Any]], answered_now: list[dict[str, Any]]
    ) -> dict[str, Any] | None:
        """Record tool returns and denials (and in `answered_now`, as Letta's
        tool_return_messages); the error detail if the messages break the rules."""
        pending = self.waiting.get(agent_id, set())
        answered: set[str] = set()
        plain = False
        for message in messages:
            kind = message.get("type")
            if kind == "tool_return":
                for r in message.get("tool_returns", []):
                    self.tool_returns.append(r)
                    answered_now.append(r)
                    answered.add(r["tool_call_id"])
            elif kind == "approval":
                for a in message.get("approvals") or []:
                    if a.get("type") == "approval" or "approve" in a:
                        if not a.get("approve"):
                            self.denials.append(a)
                            answered_now.append(
                                {
                                    "tool_call_id": a["tool_call_id"],
                                    "status": "error",
                                    "tool_return": "Error: request to call tool denied. "
                                    f"User reason: {a.get('reason')}",
                                }
                            )
                    else:
                        self.tool_returns.append(a)
                        answered_now.append(a)
                    answered.add(a["tool_call_id"])
                if message.get("approve") is False:
                    self.denials.append(message)
                    answered |= pending
            else:
                plain = True
        if pending and plain:
            return {
                "code": "PENDING_APPROVAL",
                "message": "CONFLICT: Cannot send a new message: the agent is waiting for "
                "approval on a tool call.",
                "pending_request_id": self._request_ids.get(agent_id),
            }
        if answered - pending:
            return {"message": f"No tool call awaits a result: {sorted(answered - pending)}"}
        if pending - answered:
            return {"message": f"Tool calls still await results: {sorted(pending - answered)}"}
        self.waiting.pop(agent_id, None)
        return None

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        recorded = await self.record(request)
        agent = self._agent(request)
        body = recorded.body
        self.turns.append(body)
        answered: list[dict[str, Any]] = []
        problem = self._take_returns(agent["id"], list(body.get("messages") or []), answered)
        if problem is not None:
            return web.json_response({"detail": problem}, status=409)
        reply = self._next()
        if isinstance(reply, Fail):
            return web.json_response({"detail": reply.detail}, status=reply.status)
        client_tools = {t["name"] for t in body.get("client_tools") or []}
        if isinstance(reply, CallTool) and reply.name not in client_tools:
            reply = Say(f"(the fake was scripted to call {reply.name}, which was not offered)")
        run_id = _id("run")
        events = self._events(
            agent["id"], reply, run_id, bool(body.get("stream_tokens")), answered
        )
        usage = {
            "message_type": "usage_statistics",
            "completion_tokens": 7 + len(getattr(reply, "text", "")) // 4,
            "prompt_tokens": 120 + len(json.dumps(body)) // 4,
            "total_tokens": 0,
            "step_count": 1,
            "run_ids": [run_id],
        }
        usage["total_tokens"] = usage["completion_tokens"] + usage["prompt_tokens"]
        stop = {
            "message_type": "stop_reason",
            "stop_reason": "requires_approval" if isinstance(reply, CallTool) else "end_turn",
        }
        if body.get("streaming") or request.path.endswith("/stream"):
            response = web.StreamResponse(
                headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
            )
            await response.prepare(request)
            if body.get("include_pings", True):
                await self.sse(
                    response, {"message_type": "ping", "id": _id("ping"), "date": _now()}
                )
            delay = reply.chunk_delay if isinstance(reply, Say) else 0.0
            for n, event in enumerate(events):
                if delay and n:
                    await asyncio.sleep(delay)
                await self.sse(response, event)
            await self.sse(response, stop)
            await self.sse(response, usage)
            await self.sse(response, "[DONE]")
            await response.write_eof()
            return response
        return web.json_response(
            {"messages": self._whole(events), "stop_reason": stop, "usage": usage}
        )

    def _events(
        self,
        agent_id: str,
        reply: Say | CallTool,
        run_id: str,
        tokens: bool,
        answered: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        base = {"date": _now(), "run_id": run_id, "step_id": _id("step")}
        events: list[dict[str, Any]] = [
            {
                **base,
                "id": _id("message"),
                "message_type": "tool_return_message",
                "tool_call_id": r["tool_call_id"],
                "status": r["status"],
                "tool_return": r["tool_return"],
                "tool_returns": [r],
            }
            for r in answered
        ]
        text = reply.text
        if text:
            message_id = _id("message")
            pieces = (
                _split(text, reply.chunks if isinstance(reply, Say) else 2) if tokens else [text]
            )
            events += [
                {**base, "id": message_id, "message_type": "assistant_message", "content": piece}
                for piece in pieces
            ]
        if isinstance(reply, CallTool):
            call_id = reply.call_id or f"call_{next(self._calls)}"
            arguments = json.dumps(reply.arguments)
            message_id = _id("message")
            parts = _split(arguments, 2) if tokens else [arguments]
            for n, part in enumerate(parts):
                call = (
                    {"name": reply.name, "arguments": part, "tool_call_id": call_id}
                    if n == 0
                    else {"name": None, "arguments": part, "tool_call_id": None}
                )
                events.append(
                    {
                        **base,
                        "id": message_id,
                        "message_type": "approval_request_message",
                        "tool_call": call,
                        "tool_calls": [call],
                    }
                )
            self.waiting[agent_id] = {call_id}
            self._request_ids[agent_id] = message_id
        return events

    @staticmethod
    def _whole(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Token fragments joined again: what a response without streaming holds."""
        whole: list[dict[str, Any]] = []
        for event in events:
            last = whole[-1] if whole else None
            if last and last["id"] == event["id"] and event["message_type"] == "assistant_message":
                last["content"] += event["content"]
            else:
                whole.append(dict(event))
        return whole


def _split(text: str, pieces: int) -> list[str]:
    size = max(1, -(-len(text) // max(1, pieces)))
    return [text[i : i + size] for i in range(0, len(text), size)]
