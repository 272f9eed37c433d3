"""The homeserver → appservice push API: transactions and ping.

The handler checks the hs_token, hands the transaction's events to a sink that persists them, and
only then answers 200. Nothing slow happens here: Synapse sends nothing else until we answer.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

log = logging.getLogger(__name__)

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Transaction:
    txn_id: str
    events: list[JSON]
    """Well-formed room events, in the order the homeserver sent them."""
    ephemeral: list[JSON]
    """Presence, typing and receipts. Not persisted: they describe the present."""
    crypto: JSON | None
    """What end-to-end encryption needs (MSC2409, MSC3202): `to_device` (messages to the bot's
    device, room keys among them), `device_lists` (`changed`, `left`), `otk_counts` and
    `fallback_keys` (per user, per device). None when the transaction carries none. Persisted
    with the events: a to-device message is sent once, and a lost room key is a message nobody
    can ever read."""
    fingerprint: bytes
    """What makes a transaction a duplicate together with its ID (see `fingerprint`)."""


class TransactionSink(Protocol):
    async def store_transaction(self, txn: Transaction) -> bool:
        """Persist the transaction's events durably. False if it was a duplicate.

        Raising makes the handler answer 500, so the homeserver sends it again later.
        """

    async def handle_ephemeral(self, events: Sequence[JSON]) -> None:
        """Called after a new transaction is stored, with its ephemeral events."""


def fingerprint(
    event_ids: Sequence[str], ephemeral: Sequence[JSON], crypto: JSON | None = None
) -> bytes:
    """Identify a transaction's content independently of how it was serialized.

    Synapse on SQLite reuses transaction IDs after a restart, so an ID alone does not make a
    duplicate. Retries re-serialize events (`unsigned.age` changes), so raw bytes don't either.
    The event IDs do.
    """
    digest = hashlib.sha256()
    for event_id in event_ids:
        digest.update(event_id.encode())
        digest.update(b"\n")
    digest.update(b"--\n")
    digest.update(json.dumps(list(ephemeral), sort_keys=True, separators=(",", ":")).encode())
    if crypto and crypto.get("to_device"):
        # A to-device message has no ID; its ciphertext is unique. Key counts and device lists
        # are not in it: the homeserver reads them anew for each try.
        digest.update(b"--\n")
        digest.update(
            json.dumps(crypto["to_device"], sort_keys=True, separators=(",", ":")).encode()
        )
    return digest.digest()


# Each part under its stable name first, then the unstable one Synapse uses today.
_CRYPTO_KEYS = {
    "to_device": ("to_device", "de.sorunome.msc2409.to_device"),
    "device_lists": ("device_lists", "org.matrix.msc3202.device_lists"),
    "otk_counts": ("device_one_time_keys_count", "org.matrix.msc3202.device_one_time_keys_count"),
    "fallback_keys": (
        "device_unused_fallback_key_types",
        "org.matrix.msc3202.device_unused_fallback_key_types",
    ),
}


def crypto_part(body: JSON) -> JSON | None:
    """The transaction's encryption traffic, each part of the type it must have (anything else
    is dropped: a bad part must not cost the transaction)."""
    found: JSON = {}
    for name, keys in _CRYPTO_KEYS.items():
        value = next((body[k] for k in keys if k in body), None)
        if name == "to_device":
            messages = [
                m
                for m in (value if isinstance(value, list) else [])
                if isinstance(m, dict)
                and isinstance(m.get("type"), str)
                and isinstance(m.get("sender"), str)
                and isinstance(m.get("content"), dict)
            ]
            if messages:
                found[name] = messages
        elif name == "device_lists":
            if isinstance(value, dict):
                lists = {
                    k: [u for u in value.get(k) or [] if isinstance(u, str)]
                    for k in ("changed", "left")
                    if isinstance(value.get(k), list)
                }
                if any(lists.values()):
                    found[name] = lists
        elif isinstance(value, dict) and value:
            found[name] = value
    return found or None


def is_well_formed(event: Any) -> bool:
    """A room event we can route and persist: the rest of a transaction survives a bad one."""
    return (
        isinstance(event, dict)
        and isinstance(event.get("event_id"), str)
        and event["event_id"].startswith("$")
        and isinstance(event.get("room_id"), str)
        and event["room_id"].startswith("!")
        and isinstance(event.get("type"), str)
        and isinstance(event.get("sender"), str)
        and isinstance(event.get("content", {}), dict)
    )


def _error(status: int, errcode: str, message: str) -> web.Response:
    return web.json_response({"errcode": errcode, "error": message}, status=status)


class TransactionReceiver:
    """aiohttp handlers for PUT /_matrix/app/v1/transactions/{txnId} and POST .../ping."""

    def __init__(self, hs_token: str, sink: TransactionSink, registry: CollectorRegistry) -> None:
        self._hs_token = hs_token.encode()
        self._sink = sink
        self._transactions = Counter(
            "doryo_transactions",
            "Transactions received from the homeserver, by outcome",
            ["outcome"],
            registry=registry,
        )
        self._events = Counter(
            "doryo_events_received",
            "Events received from the homeserver, by kind",
            ["kind"],
            registry=registry,
        )
        self._ack_seconds = Histogram(
            "doryo_transaction_ack_seconds",
            "Time from receiving a transaction to answering it",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=registry,
        )
        self.pings_received = 0

    def add_routes(self, app: web.Application) -> None:
        app.router.add_put("/_matrix/app/v1/transactions/{txn_id}", self.handle_transaction)
        # The unversioned path of the old appservice API; some homeservers still use it.
        app.router.add_put("/transactions/{txn_id}", self.handle_transaction)
        app.router.add_post("/_matrix/app/v1/ping", self.handle_ping)
        # We own no room aliases and create users ourselves: the query APIs always say no.
        app.router.add_get("/_matrix/app/v1/users/{user_id}", self.handle_query)
        app.router.add_get("/_matrix/app/v1/rooms/{alias}", self.handle_query)

    def _auth_error(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else None
        if token is None:
            # Homeservers before the v1.4 spec put the token in the query string.
            token = request.query.get("access_token")
        if token is None:
            return _error(401, "M_MISSING_TOKEN", "Missing hs_token")
        if not hmac.compare_digest(token.encode(), self._hs_token):
            return _error(403, "M_FORBIDDEN", "Invalid hs_token")
        return None

    async def handle_transaction(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        if (denied := self._auth_error(request)) is not None:
            self._transactions.labels("unauthorized").inc()
            return denied
        try:
            body = await request.json(loads=json.loads)
        except (json.JSONDecodeError, UnicodeDecodeError):
            self._transactions.labels("bad_json").inc()
            return _error(400, "M_NOT_JSON", "Body is not JSON")
        if not isinstance(body, dict):
            self._transactions.labels("bad_json").inc()
            return _error(400, "M_BAD_JSON", "Body is not a JSON object")

        txn = self._parse(request.match_info["txn_id"], body)
        try:
            is_new = await self._sink.store_transaction(txn)
        except Exception:
            # The homeserver keeps the transaction and sends it again: nothing is lost.
            log.exception(
                "could not store transaction %s; asking the homeserver to retry", txn.txn_id
            )
            self._transactions.labels("error").inc()
            return _error(500, "M_UNKNOWN", "Could not store the transaction, retry later")
        self._transactions.labels("new" if is_new else "duplicate").inc()
        if is_new and txn.ephemeral:
            try:
                await self._sink.handle_ephemeral(txn.ephemeral)
            except Exception:
                log.exception("ephemeral events of transaction %s failed", txn.txn_id)
        # Up to the answer: the homeserver sends nothing more to us until it has it.
        self._ack_seconds.observe(time.perf_counter() - started)
        return web.json_response({})

    def _parse(self, txn_id: str, body: JSON) -> Transaction:
        raw_events = body.get("events") or []
        raw_ephemeral = body.get("ephemeral") or body.get("de.sorunome.msc2409.ephemeral") or []
        events = []
        for event in raw_events if isinstance(raw_events, list) else []:
            if is_well_formed(event):
                events.append(event)
                self._events.labels("room").inc()
            else:
                # Logged without its content: it may hold a message body.
                log.warning(
                    "dropped a malformed event in transaction %s (keys: %s)",
                    txn_id,
                    sorted(event)[:10] if isinstance(event, dict) else type(event).__name__,
                )
                self._events.labels("malformed").inc()
        ephemeral = [e for e in raw_ephemeral if isinstance(e, dict) and "type" in e]
        self._events.labels("ephemeral").inc(len(ephemeral))
        crypto = crypto_part(body)
        if crypto and crypto.get("to_device"):
            self._events.labels("to_device").inc(len(crypto["to_device"]))
        return Transaction(
            txn_id=txn_id,
            events=events,
            ephemeral=ephemeral,
            crypto=crypto,
            fingerprint=fingerprint([e["event_id"] for e in events], ephemeral, crypto),
        )

    async def handle_ping(self, request: web.Request) -> web.Response:
        if (denied := self._auth_error(request)) is not None:
            return denied
        self.pings_received += 1
        return web.json_response({})

    async def handle_query(self, request: web.Request) -> web.Response:
        if (denied := self._auth_error(request)) is not None:
            return denied
        return _error(404, "M_NOT_FOUND", "Not found")
