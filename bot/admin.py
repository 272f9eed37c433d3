"""The admin HTTP API under /_doryo/v1/ on the appservice port (docs/spec.md §5).

Every request carries `Authorization: Bearer <admin_api.token>`; with no token configured the
API is off (404). Errors are JSON: {"errcode": …, "error": …}, like Matrix's.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bot.blueprints import Blueprint
from bot.context import Context
from bot.core.errors import BlueprintError
from bot.core.tokens import bearer_token, carries
from bot.workspaces import retention

log = logging.getLogger(__name__)

PREFIX = "/_doryo/v1/"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, errcode: str, message: str) -> web.Response:
    return web.json_response({"errcode": errcode, "error": message}, status=status)


def int_param(request: web.Request, name: str, default: int, *, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise web.HTTPBadRequest(text=f"{name} must be between {low} and {high}")
    return value


def has_admin_token(request: web.Request, token: str) -> bool:
    """The request carries the admin token (never true while it is empty)."""
    return carries(request, token)


def auth_middleware(token: str) -> Any:
    expected = token.encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(PREFIX):
            return await handler(request)
        if not expected:
            return error(404, "M_NOT_FOUND", "The admin API is off (admin_api.token is empty)")
        given = bearer_token(request)
        if not given:
            return error(401, "M_MISSING_TOKEN", "Missing bearer token")
        if not hmac.compare_digest(given, expected):
            return error(403, "M_FORBIDDEN", "Invalid bearer token")
        try:
            return await handler(request)
        except web.HTTPBadRequest as e:
            return error(400, "M_INVALID_PARAM", e.text or "Bad request")

    return middleware


def add_routes(app: web.Application, ctx: Context) -> None:
    app.middlewares.append(auth_middleware(ctx.config.admin_api.token.get_secret_value()))

    async def session_messages(request: web.Request) -> web.Response:
        room_id = request.match_info["session_id"]
        if await ctx.sessions.get(room_id) is None:
            return error(404, "M_NOT_FOUND", "No such session")
        after = int_param(request, "after_seq", 0, low=0, high=2**62)
        limit = int_param(request, "limit", 100, low=1, high=1000)
        page = await ctx.history.page(room_id, after_seq=after, limit=limit)
        messages = [
            {
                "seq": m.seq,
                "event_id": m.event_id,
                "sender": m.sender,
                "type": m.kind,
                "body": m.body,
                "sent_at": m.sent_at.isoformat(),
                "edited_at": m.edited_at.isoformat() if m.edited_at else None,
                "redacted": m.redacted,
                "command": m.is_command,
            }
            for m in page
        ]
        return web.json_response(
            {
                "session": room_id,
                "messages": messages,
                "next_after_seq": messages[-1]["seq"] if messages else after,
            }
        )

    async def workspace_retention(request: web.Request) -> web.Response:
        workspace = await ctx.workspaces.get(request.match_info["workspace_id"])
        if workspace is None:
            return error(404, "M_NOT_FOUND", "No such workspace")
        run = await retention.last_run(ctx, workspace.id)
        return web.json_response(
            {
                "workspace_id": workspace.id,
                "retention_days": retention.retention_days(ctx, workspace),
                "last_run": None
                if run is None
                else {
                    "ran_at": run.ran_at.isoformat(),
                    "cutoff": run.cutoff.isoformat(),
                    "messages_deleted": run.messages,
                    "memories_deleted": run.memories,
                },
            }
        )

    app.router.add_get(PREFIX + "sessions/{session_id}/messages", session_messages)
    app.router.add_get(PREFIX + "workspaces/{workspace_id}/retention", workspace_retention)
    add_llm_routes(app, ctx)
    add_memory_routes(app, ctx)
    add_tool_routes(app, ctx)
    add_blueprint_routes(app, ctx)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="the body is not JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="the body must be a JSON object")
    return body


def add_llm_routes(app: web.Application, ctx: Context) -> None:
    async def models(_: web.Request) -> web.Response:
        return web.json_response({"models": [m.as_dict() for m in ctx.llm.models()]})

    async def usage(request: web.Request) -> web.Response:
        days = int_param(request, "days", 7, low=1, high=366)
        workspace_id = request.query.get("workspace_id") or None
        rows = await ctx.llm.usage.summary(days=days, workspace_id=workspace_id)
        return web.json_response(
            {"days": days, "workspace_id": workspace_id, "usage": [r.as_dict() for r in rows]}
        )

    app.router.add_get(PREFIX + "llm/models", models)
    app.router.add_get(PREFIX + "llm/usage", usage)


def add_memory_routes(app: web.Application, ctx: Context) -> None:
    async def query(request: web.Request) -> web.Response:
        if ctx.memory is None:
            return error(503, "M_UNAVAILABLE", "The memory is off; see the bot's log")
        body = await _json_body(request)
        workspace_id, text = body.get("workspace_id"), body.get("query")
        if not isinstance(workspace_id, str) or not isinstance(text, str):
            raise web.HTTPBadRequest(text="workspace_id and query are required strings")
        k = body.get("k", 5)
        mode = body.get("mode", "hybrid")
        if (
            not isinstance(k, int)
            or not 1 <= k <= 100
            or mode not in ("hybrid", "vector", "fulltext")
        ):
            raise web.HTTPBadRequest(text="k is 1 to 100; mode is hybrid, vector or fulltext")
        hits = await ctx.memory.search(workspace_id, text, k=k, mode=mode)
        return web.json_response(
            {
                "results": [
                    {
                        "id": h.item.id,
                        "kind": h.item.kind,
                        "text": h.item.text,
                        "score": h.score,
                        "room_id": h.item.room_id,
                        "event_id": h.item.event_id,
                        "sender": h.item.sender,
                        "created_at": h.item.created_at.isoformat(),
                    }
                    for h in hits
                ]
            }
        )

    async def stats(request: web.Request) -> web.Response:
        if ctx.memory is None:
            return error(503, "M_UNAVAILABLE", "The memory is off; see the bot's log")
        workspace_id = request.query.get("workspace_id")
        if not workspace_id:
            raise web.HTTPBadRequest(text="workspace_id is required")
        found = await ctx.memory.stats(workspace_id)
        return web.json_response(
            {
                "workspace_id": workspace_id,
                "items": found.items,
                "pieces": found.pieces,
                "by_kind": dict(found.by_kind),
                "by_agent": {a: dict(k) for a, k in found.by_agent.items()},
                "unembedded": found.unembedded,
                "model": found.model,
                "dims": found.dims,
            }
        )

    app.router.add_post(PREFIX + "memory/query", query)
    app.router.add_get(PREFIX + "memory/stats", stats)


def add_tool_routes(app: web.Application, ctx: Context) -> None:
    async def tools(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "tools": [
                    {
                        "name": t.name,
                        "version": t.version,
                        "description": t.description,
                        "executor": t.executor,
                        "writes": t.writes,
                        "idempotent": t.idempotent,
                        "parameters": t.schema()["function"]["parameters"],
                    }
                    for t in ctx.tools.all()
                ]
            }
        )

    async def actions(request: web.Request) -> web.Response:
        workspace_id = request.query.get("workspace_id")
        if not workspace_id:
            raise web.HTTPBadRequest(text="workspace_id is required")
        everything = request.query.get("all") in ("1", "true")
        found = await ctx.actions.store.of_workspace(workspace_id, open_only=not everything)
        return web.json_response(
            {
                "actions": [
                    {
                        "id": a.code,
                        "tool": a.tool,
                        "args": a.args,
                        "status": a.status,
                        "requested_by": a.requested_by,
                        "confirmed_by": a.confirmed_by,
                        "result": a.result,
                        "error": a.error,
                        "room_id": a.room_id,
                        "card_event_id": a.card_event_id,
                        "created_at": a.created_at.isoformat(),
                    }
                    for a in found
                ]
            }
        )

    app.router.add_get(PREFIX + "tools", tools)
    app.router.add_get(PREFIX + "actions", actions)


def _blueprint_json(blueprint: Blueprint) -> dict[str, Any]:
    return {
        "code": blueprint.code,
        "version": blueprint.version,
        "name": blueprint.name,
        "description": blueprint.description,
        "model": blueprint.model,
        "fallbacks": list(blueprint.fallbacks) if blueprint.fallbacks is not None else None,
        "instructions": blueprint.instructions,
        "tools": list(blueprint.tools),
        "temperature": blueprint.temperature,
        "max_tokens": blueprint.max_tokens,
        "extends": blueprint.extends,
        "extends_version": blueprint.extends_version,
        "spec": dict(blueprint.spec),
        "current": blueprint.current,
        "created_by": blueprint.created_by,
        "created_at": blueprint.created_at.isoformat(),
    }


def add_blueprint_routes(app: web.Application, ctx: Context) -> None:
    store = ctx.blueprints

    def guarded(handler: Handler) -> Handler:
        async def run(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except BlueprintError as e:
                status = 404 if "There is no blueprint" in str(e) else 400
                return web.json_response(
                    {
                        "errcode": "M_NOT_FOUND" if status == 404 else "M_INVALID_PARAM",
                        "error": str(e),
                        "fields": list(e.fields),
                    },
                    status=status,
                )

        return run

    async def listing(_: web.Request) -> web.Response:
        return web.json_response({"blueprints": [_blueprint_json(b) for b in await store.list()]})

    async def create(request: web.Request) -> web.Response:
        blueprint = await store.create(await _json_body(request), source="api")
        return web.json_response(_blueprint_json(blueprint), status=201)

    async def show(request: web.Request) -> web.Response:
        version = request.query.get("version")
        if version is not None and not version.isdigit():
            raise web.HTTPBadRequest(text="version must be a whole number")
        blueprint = await store.get(request.match_info["code"], int(version) if version else None)
        return web.json_response(_blueprint_json(blueprint))

    async def edit(request: web.Request) -> web.Response:
        replace = request.method == "PUT"
        blueprint = await store.edit(
            request.match_info["code"], await _json_body(request), replace=replace, source="api"
        )
        return web.json_response(_blueprint_json(blueprint))

    async def history(request: web.Request) -> web.Response:
        versions = await store.history(request.match_info["code"])
        return web.json_response(
            {
                "versions": [
                    {
                        "version": v.version,
                        "created_at": v.created_at.isoformat(),
                        "created_by": v.created_by,
                        "source": v.source,
                        "current": v.current,
                    }
                    for v in versions
                ]
            }
        )

    async def rollback(request: web.Request) -> web.Response:
        body = await _json_body(request)
        version = body.get("version")
        if not isinstance(version, int):
            raise web.HTTPBadRequest(text="version is a required whole number")
        blueprint = await store.rollback(request.match_info["code"], version)
        return web.json_response(_blueprint_json(blueprint))

    app.router.add_get(PREFIX + "blueprints", guarded(listing))
    app.router.add_post(PREFIX + "blueprints", guarded(create))
    app.router.add_get(PREFIX + "blueprints/{code}", guarded(show))
    app.router.add_patch(PREFIX + "blueprints/{code}", guarded(edit))
    app.router.add_put(PREFIX + "blueprints/{code}", guarded(edit))
    app.router.add_get(PREFIX + "blueprints/{code}/history", guarded(history))
    app.router.add_post(PREFIX + "blueprints/{code}/rollback", guarded(rollback))
