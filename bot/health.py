"""GET /health (the process answers), /ready (database, Redis, homeserver, and the bot's device
when encryption is on: whether each answers; why not and how fast, with the admin token; for a
process that handles events, its leases) and /metrics (this process's)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.admin import has_admin_token
from bot.context import Context
from bot.core.leases import Leases

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


async def _leases_held(leases: Leases) -> None:
    if not leases.held.is_set():
        raise ConnectionError("the lease connection to the database is down; reconnecting")


def add_routes(app: web.Application, ctx: Context, leases: Leases | None = None) -> None:
    """`leases`: those of a process that handles events; /ready then says whether it holds
    them, and reports the rooms it holds and whether it runs the jobs."""

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def ready(request: web.Request) -> web.Response:
        checks = [
            _check("database", lambda: ctx.db.fetchval("SELECT 1")),
            _check("redis", ctx.redis.ping),
            _check("homeserver", lambda: ctx.matrix.versions(timeout=CHECK_TIMEOUT)),
        ]
        if ctx.encryption is not None:
            # Its own (the owner's) keys loaded, or a worker's call to the owner answered.
            checks.append(_check("encryption", ctx.encryption.check))
        if leases is not None:
            checks.append(_check("leases", lambda: _leases_held(leases)))
        results = dict(await asyncio.gather(*checks))
        if leases is not None and results["leases"]["ok"]:
            results["leases"].update(rooms=leases.rooms_held, jobs=leases.holds_jobs)
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
