"""The tokens Doryo's processes show one another, and how a request's bearer token is read.

A deployment's processes all have `appservice.as_token`; what one shows another (the embedder,
the device's owner) is derived from it for that purpose (an HMAC), so the token itself never
travels between them and a token for one purpose opens nothing else."""

from __future__ import annotations

import hashlib
import hmac

from aiohttp import web

from bot.core.config import Config


def derived_token(config: Config, purpose: str) -> str:
    secret = config.appservice.as_token.get_secret_value().encode()
    return hmac.new(secret, purpose.encode(), hashlib.sha256).hexdigest()


def bearer_token(request: web.Request) -> bytes:
    """The request's `Authorization: Bearer …` token (empty when it has none)."""
    header = request.headers.get("Authorization", "")
    return header.removeprefix("Bearer ").encode() if header.startswith("Bearer ") else b""


def carries(request: web.Request, token: str) -> bool:
    """The request carries `token` (compared in constant time; never true while it is empty)."""
    given = bearer_token(request)
    return bool(token) and bool(given) and hmac.compare_digest(given, token.encode())
