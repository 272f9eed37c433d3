"""The bot's one device, shared by the deployment's processes: its owner (the receiver, or the
`all` process) serves it on the appservice port; a worker (`--role worker`) encrypts, decrypts
and follows rooms through it (RemoteDevice).

One device, one owner: Olm sessions and the outbound Megolm sessions have one writer
(bot.encryption.machine), and the owner is also the process that takes in the room keys the
homeserver sends with its transactions — a worker that asked for a message's key is answered as
soon as the key has arrived there. Each call is a POST to the owner, authenticated by a token
derived from the appservice's token (which every process has, and which is never sent itself);
a call that fails does not fall back to anything: a message that cannot be encrypted is not sent
(EncryptionUnavailable: the event is tried again later), one that cannot be decrypted waits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from appservice.errors import EncryptionUnavailable, HomeserverUnavailable
from bot.core.config import Config
from bot.core.errors import ConfigError
from bot.core.tokens import carries, derived_token
from bot.encryption.device import gets_new_key
from bot.encryption.machine import READY_WAIT, Encryption, NotAccepted, Undecryptable

log = logging.getLogger(__name__)

JSON = dict[str, Any]

DEVICE_PATH = "/_doryo/device"
CALL_TIMEOUT = 60.0
"""Seconds an encryption may take at the owner (sharing a new room key with every device of a
big room is the slow part)."""
RETRY_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0)
"""Between tries while the owner is not listening or not ready (restarting), within READY_WAIT."""
MAX_WAIT = 300.0


def device_token(config: Config) -> str:
    """What a worker shows the device's owner: derived from the appservice's token."""
    return derived_token(config, "doryo device")


def device_url(config: Config) -> str:
    """Where the workers reach the device's owner: encryption.device_url, or the receiver's
    own address (the one in the registration)."""
    base = config.encryption.device_url or config.appservice.public_address
    return base.rstrip("/") + DEVICE_PATH


# The owner ------------------------------------------------------------------------------------


class _BadRequest(Exception):
    pass


def _text(body: JSON, key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise _BadRequest(f"{key}: a non-empty string")
    return value


def _object(body: JSON, key: str) -> JSON:
    value = body.get(key)
    if not isinstance(value, dict):
        raise _BadRequest(f"{key}: an object")
    return value


async def _encrypt(device: Encryption, body: JSON) -> JSON:
    kind, content = await device.encrypt(
        _text(body, "room_id"), _text(body, "type"), _object(body, "content")
    )
    return {"type": kind, "content": content}


async def _decrypt(device: Encryption, body: JSON) -> JSON:
    wait = body.get("wait", 0)
    if not isinstance(wait, int | float) or isinstance(wait, bool) or not 0 <= wait <= MAX_WAIT:
        raise _BadRequest(f"wait: seconds from 0 to {MAX_WAIT:.0f}")
    try:
        return {"event": await device.decrypt(_object(body, "event"), wait=float(wait))}
    except Undecryptable as e:
        return {"error": "undecryptable", "session_id": e.session_id, "reason": str(e)}
    except NotAccepted as e:
        return {"error": "not_accepted", "reason": str(e)}


async def _request_key(device: Encryption, body: JSON) -> JSON:
    await device.request_key(_object(body, "event"))
    return {}


async def _room_encrypted(device: Encryption, body: JSON) -> JSON:
    await device.room_encrypted(_text(body, "room_id"), _object(body, "content"))
    return {}


async def _member_changed(device: Encryption, body: JSON) -> JSON:
    await device.member_changed(
        _text(body, "room_id"), _text(body, "user_id"), _text(body, "before"), _text(body, "now")
    )
    return {}


_OPERATIONS: dict[str, Callable[[Encryption, JSON], Awaitable[JSON]]] = {
    "encrypt": _encrypt,
    "decrypt": _decrypt,
    "request_key": _request_key,
    "room_encrypted": _room_encrypted,
    "member_changed": _member_changed,
}


def add_routes(app: web.Application, device: Encryption, config: Config) -> None:
    """Serve the device to the deployment's workers (only to those with its token)."""
    token = device_token(config)

    def refused(request: web.Request) -> web.Response | None:
        if carries(request, token):
            return None
        return web.json_response({"error": "forbidden"}, status=403)

    async def info(request: web.Request) -> web.Response:
        if (no := refused(request)) is not None:
            return no
        return web.json_response({"device_id": device.device_id, "ready": device.ready.is_set()})

    async def call(request: web.Request) -> web.Response:
        if (no := refused(request)) is not None:
            return no
        operation = _OPERATIONS.get(request.match_info["operation"])
        if operation is None:
            return web.json_response({"error": "no such operation"}, status=404)
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise _BadRequest("a JSON object")
            return web.json_response(await operation(device, body))
        except (ValueError, _BadRequest) as e:
            return web.json_response({"error": "bad request", "reason": str(e)}, status=400)
        except (
            HomeserverUnavailable,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            OSError,
        ) as e:
            return web.json_response({"error": "unavailable", "reason": str(e)}, status=503)
        except Exception:
            log.exception("encryption: a worker's %s failed", request.match_info["operation"])
            return web.json_response({"error": "failed"}, status=500)

    app.router.add_get(DEVICE_PATH, info)
    app.router.add_post(DEVICE_PATH + "/{operation}", call)


# A worker -------------------------------------------------------------------------------------


class _Final(EncryptionUnavailable):
    """Not worth trying again within the call."""


class _Refused(_Final):
    """The owner's address answers, but not as the device's owner for this process (another
    token, another program): a configuration error."""


class _Unanswered(_Final):
    """The owner took the call and gave no answer in time (an owner that hangs is not made to
    hang twice as long)."""


class DeviceFailed(Exception):
    """The owner failed on this call (its log says why); not a reason to try again."""


class RemoteDevice:
    """The device, used from a worker through its owner. Each call waits (up to READY_WAIT)
    for an owner that is restarting, then raises EncryptionUnavailable."""

    def __init__(self, config: Config, http: aiohttp.ClientSession) -> None:
        self._url = device_url(config)
        self._headers = {"Authorization": f"Bearer {device_token(config)}"}
        self._http = http
        self._device_id = ""

    @property
    def device_id(self) -> str:
        return self._device_id

    async def start(self, *, nudge: Callable[[], Awaitable[None]] | None = None) -> None:
        try:
            await self.check()
        except _Refused as e:
            raise ConfigError(
                f"{e}: encryption.device_url must point at the receiver (or the `all` process) "
                "that owns the bot's device, and every process needs the same "
                "appservice.as_token. See docs/deployment.md."
            ) from None
        except EncryptionUnavailable as e:
            # It may start after this worker: encrypted rooms wait for it meanwhile.
            log.warning("encryption: %s; messages in encrypted rooms wait for it", e)
        else:
            log.info("encryption: using the bot's device %s at %s", self._device_id, self._url)

    async def stop(self) -> None:
        pass

    async def check(self) -> None:
        try:
            async with self._http.get(
                self._url, headers=self._headers, timeout=aiohttp.ClientTimeout(total=5)
            ) as response:
                if response.status in (401, 403, 404, 405):
                    raise _Refused(f"{self._url} refused this process ({response.status})")
                response.raise_for_status()
                body = await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise EncryptionUnavailable(
                f"the bot's device at {self._url} is not reachable: {type(e).__name__} {e}"
            ) from None
        if not isinstance(body, dict):
            raise _Refused(f"{self._url} did not answer as the bot's device")
        self._device_id = str(body.get("device_id") or "")
        if not body.get("ready"):
            raise EncryptionUnavailable(f"the bot's device at {self._url} is not ready yet")

    async def _call(self, operation: str, body: JSON, *, timeout: float | None = None) -> JSON:
        timeout = timeout or CALL_TIMEOUT
        deadline = time.monotonic() + READY_WAIT
        tries = 0
        while True:
            try:
                return await self._post(operation, body, timeout)
            except _Final:
                raise
            except EncryptionUnavailable as e:
                delay = RETRY_DELAYS[min(tries, len(RETRY_DELAYS) - 1)]
                if time.monotonic() + delay > deadline:
                    raise
                if tries == 0:
                    log.warning("encryption: %s; trying again for %.0f s", e, READY_WAIT)
                tries += 1
                await asyncio.sleep(delay)

    async def _post(self, operation: str, body: JSON, timeout: float) -> JSON:
        url = f"{self._url}/{operation}"
        try:
            async with self._http.post(
                url, json=body, headers=self._headers, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as response:
                answer = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, ValueError) as e:
            raise EncryptionUnavailable(
                f"the bot's device at {self._url} is not reachable: {type(e).__name__} {e}"
            ) from None
        except TimeoutError:
            raise _Unanswered(f"the bot's device at {self._url} did not answer in time") from None
        if status in (401, 403, 404, 405):
            raise _Refused(f"{url} refused this process ({status})")
        if status == 500:
            # A fault of the owner's with this event, as it would be in one process: the event
            # fails (its sender is told), rather than hold its room for good.
            raise DeviceFailed(f"the bot's device failed to {operation.replace('_', ' ')}")
        if status != 200 or not isinstance(answer, dict):
            reason = answer.get("reason") if isinstance(answer, dict) else None
            raise EncryptionUnavailable(
                f"the bot's device could not {operation.replace('_', ' ')} ({status}"
                f"{': ' + str(reason) if reason else ''})"
            )
        return answer

    async def encrypt(self, room_id: str, event_type: str, content: JSON) -> tuple[str, JSON]:
        answer = await self._call(
            "encrypt", {"room_id": room_id, "type": event_type, "content": content}
        )
        kind, encrypted = answer.get("type"), answer.get("content")
        if not isinstance(kind, str) or not isinstance(encrypted, dict):
            raise EncryptionUnavailable("the bot's device answered an encryption with no event")
        return kind, encrypted

    async def decrypt(self, event: JSON, *, wait: float = 0) -> JSON:
        wait = min(max(wait, 0.0), MAX_WAIT)
        answer = await self._call(
            "decrypt", {"event": event, "wait": wait}, timeout=wait + READY_WAIT + 10
        )
        error = answer.get("error")
        if error == "undecryptable":
            raise Undecryptable(str(answer.get("session_id") or ""), str(answer.get("reason")))
        if error == "not_accepted":
            raise NotAccepted(str(answer.get("reason")))
        decrypted = answer.get("event")
        if not isinstance(decrypted, dict):
            raise EncryptionUnavailable("the bot's device answered a decryption with no event")
        return decrypted

    async def request_key(self, event: JSON) -> None:
        await self._call("request_key", {"event": event})

    async def room_encrypted(self, room_id: str, content: JSON) -> None:
        await self._call("room_encrypted", {"room_id": room_id, "content": content})

    async def member_changed(self, room_id: str, user_id: str, before: str, now: str) -> None:
        if not gets_new_key(before, now):
            return
        await self._call(
            "member_changed",
            {"room_id": room_id, "user_id": user_id, "before": before, "now": now},
        )
