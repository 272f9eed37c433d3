"""A message the bot cannot decrypt: ask for its key, wait a bounded time, then tell its sender
once — never silence, never a loop of notices.

Told once per Megolm session (a client shares one key for many messages: one notice covers
them), only for people (not the appservice's own users), and only for recent messages (one found
late, in a catch-up of history, is not worth a notice: nobody waits for it any more).
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import asyncpg

from appservice.matrix import pill
from bot.core import strings
from bot.core.replies import Replier
from bot.encryption.device import Device
from bot.encryption.machine import NotAccepted, Undecryptable

log = logging.getLogger(__name__)

FIRST_WAIT = 2.0
"""Seconds a message waits for a key that is on its way (sent with it) before the bot asks."""


async def decrypted(
    encryption: Device,
    pool: asyncpg.Pool,
    event: dict[str, Any],
    reply: Replier,
    *,
    key_wait: float,
    namespace: re.Pattern[str],
    max_age_ms: int,
) -> dict[str, Any] | None:
    """The event decrypted, or None once its sender has been told (or needs not be)."""
    try:
        return await encryption.decrypt(event, wait=min(FIRST_WAIT, key_wait))
    except Undecryptable:
        pass
    except NotAccepted as e:
        log.warning("encryption: dropped %s: %s", event.get("event_id"), e)
        return None
    await encryption.request_key(event)
    try:
        return await encryption.decrypt(event, wait=key_wait)
    except Undecryptable as e:
        await _tell_once(pool, event, e, reply, namespace=namespace, max_age_ms=max_age_ms)
        return None


async def _tell_once(
    pool: asyncpg.Pool,
    event: dict[str, Any],
    error: Undecryptable,
    reply: Replier,
    *,
    namespace: re.Pattern[str],
    max_age_ms: int,
) -> None:
    sender = str(event.get("sender", ""))
    room_id = str(event.get("room_id", ""))
    log.warning(
        "encryption: cannot decrypt %s from %s in %s (%s)",
        event.get("event_id"),
        sender,
        room_id,
        error,
    )
    if namespace.match(sender):
        return
    sent = event.get("origin_server_ts")
    if not isinstance(sent, int) or time.time() * 1000 - sent > max_age_ms:
        return
    first = await pool.fetchval(
        """
        INSERT INTO undecryptable_notices (room_id, session_id, sender) VALUES ($1, $2, $3)
        ON CONFLICT DO NOTHING RETURNING true
        """,
        room_id,
        error.session_id or str(event.get("event_id")),
        sender,
    )
    if first:
        await reply.send_notice(strings.UNDECRYPTABLE.format(user=pill(sender)), mentions=[sender])
