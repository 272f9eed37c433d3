"""GET /health (the process answers), /ready (database, Redis, homeserver: whether each answers;
why not and how fast, with the admin token) and /metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.admin import has_admin_token
from bot.context import Context

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 2.0


async def _check(
    name: str, probe: Callable[[], Awaitable[object]]
) -> tuple[str, dict[str, object]]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await probe()
    except Exception as e:
        return name, {
            "ok": False,
            "error": f"{type(e).__name__}: {e}" if str(e) else type(e).__name__,
        }
    return name, {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)}


def add_routes(app: web.Application, ctx: Context) -> None:
    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def ready(request: web.Request) -> web.Response:
        results = dict(
            await asyncio.gather(
                _check("database", lambda: ctx.db.fetchval("SELECT 1")),
                _check("redis", ctx.redis.ping),
                _check("homeserver", lambda: ctx.matrix.versions(timeout=CHECK_TIMEOUT)),
            )
        )
        ok = all(r["ok"] for r in results.values())
        if not has_admin_token(request, ctx.config.admin_api.token.get_secret_value()):
            # Errors name hosts, ports and versions: for the operator, not for whoever can
            # reach the port.
            results = {name: {"ok": r["ok"]} for name, r in results.items()}
        return web.json_response({"ready": ok, "checks": results}, status=200 if ok else 503)

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(ctx.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
