"""The small Matrix client-server API the bot uses, as the appservice's users.

Every call has a timeout. Failures are sorted into HomeserverUnavailable (not reachable, timed out,
5xx: worth retrying) and MatrixRequestError (the homeserver said no). Best-effort calls end in
`_no_fail`: they log instead of raising.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any, Protocol

import aiohttp
from markdown_it import MarkdownIt
from mautrix.api import HTTPAPI, MediaPath, Method, Path
from mautrix.errors import MatrixConnectionError
from mautrix.errors import MatrixRequestError as MautrixRequestError
from mautrix.types import UserID
from prometheus_client import Counter

from appservice.errors import HomeserverUnavailable, MatrixRequestError, MediaTooLarge

log = logging.getLogger(__name__)

JSON = dict[str, Any]

ENCRYPTION_STATE: JSON = {
    "type": "m.room.encryption",
    "state_key": "",
    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
}
"""The initial state that makes a new room end-to-end encrypted (Megolm, as Element does)."""

MESSAGE_TYPES = ["m.room.message", "m.room.encrypted"]

OWN_ROOM_KEY = "org.doryo.own_room"
NUDGE_TYPE = "org.doryo.nudge"
NUDGE_WAIT = 2.5
"""Seconds from the event that starts Synapse's retries to its first retry (2 s), and a bit."""
"""A timeline filter for messages: in an encrypted room they are m.room.encrypted until read."""

_MXC = re.compile(r"^mxc://([A-Za-z0-9.:\[\]-]{1,255})/([A-Za-z0-9_-]{1,255})$")

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable(
    ["table", "strikethrough"]
)


def render_markdown(text: str) -> str:
    """Markdown to the HTML subset Matrix clients render. Raw HTML in the input is escaped."""
    return str(_markdown.render(text)).strip()


def new_txn_id() -> str:
    return f"doryo.{uuid.uuid4().hex}"


def text_content(
    body: str,
    *,
    notice: bool = False,
    html: str | None = None,
    reply_to: str | None = None,
    thread_root: str | None = None,
    falling_back: bool | None = None,
    mentions: list[str] | None = None,
) -> JSON:
    """An m.room.message content. A thread_root puts it in that thread (replying to reply_to;
    `falling_back`: the reply is only for clients without threads — by default when there is
    no reply_to)."""
    content: JSON = {"msgtype": "m.notice" if notice else "m.text", "body": body}
    if html is not None:
        content["format"] = "org.matrix.custom.html"
        content["formatted_body"] = html
    if thread_root is not None:
        content["m.relates_to"] = {
            "rel_type": "m.thread",
            "event_id": thread_root,
            "is_falling_back": reply_to is None if falling_back is None else falling_back,
            "m.in_reply_to": {"event_id": reply_to or thread_root},
        }
    elif reply_to is not None:
        content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to}}
    # Always set: an empty m.mentions tells clients this message pings nobody.
    content["m.mentions"] = {"user_ids": mentions} if mentions else {}
    return content


def thread_of(content: Any) -> str | None:
    """The root of the thread an event's content puts it in, if any (untrusted: checked)."""
    relates = content.get("m.relates_to") if isinstance(content, Mapping) else None
    if isinstance(relates, Mapping) and relates.get("rel_type") == "m.thread":
        root = relates.get("event_id")
        if isinstance(root, str) and root.startswith("$"):
            return root
    return None


def has_relation(content: Any) -> bool:
    """Whether the event relates to another (a thread, an edit, a reaction …): the homeserver
    refuses to start a thread on such an event. A plain reply is not a relation."""
    relates = content.get("m.relates_to") if isinstance(content, Mapping) else None
    return isinstance(relates, Mapping) and relates.get("rel_type") is not None


def pill(user_id: str | None) -> str:
    """A user as Markdown that clients show as a pill (a matrix.to link); with the user in
    `m.mentions.user_ids` of the content, their client notifies them."""
    if not user_id:
        return "someone"
    if not re.fullmatch(r"@[^\s:/\[\]()<>]+:[A-Za-z0-9.\-:\[\]]+", user_id):
        return f"`{user_id}`"  # not a plain user ID: shown, not linked
    return f"[{user_id}](https://matrix.to/#/{user_id})"


_PILL = re.compile(r"\]\(https://matrix\.to/#/(@[^)\s/?]+)\)")


def pilled(markdown: str) -> list[str]:
    """The users `markdown` names as pills (pill()): to list in m.mentions, so that their
    clients notify them. Only for text the bot wrote: in a model's answer a link is not an
    intent to ping."""
    return list(dict.fromkeys(_PILL.findall(markdown)))


def markdown_content(markdown: str, **kwargs: Any) -> JSON:
    return text_content(markdown, html=render_markdown(markdown), **kwargs)


def edit_content(event_id: str, new_content: JSON) -> JSON:
    """An m.replace edit of `event_id` whose new content is `new_content`."""
    new = {k: v for k, v in new_content.items() if k != "m.relates_to"}
    content: JSON = {
        **new,
        "body": f"* {new.get('body', '')}",
        "m.new_content": new,
        "m.relates_to": {"rel_type": "m.replace", "event_id": event_id},
    }
    if "formatted_body" in new:
        content["formatted_body"] = f"* {new['formatted_body']}"
    return content


class RoomCrypto(Protocol):
    """End-to-end encryption as the transport needs it (bot/encryption/machine.py)."""

    async def encrypt(self, room_id: str, event_type: str, content: JSON) -> tuple[str, JSON]:
        """The event as it must be sent: encrypted in an encrypted room, unchanged elsewhere.
        Raises HomeserverUnavailable (EncryptionUnavailable) rather than send in the clear."""
        ...

    async def decrypt(self, event: JSON, *, wait: float = 0) -> JSON:
        """An m.room.encrypted event as its sender wrote it; raises if it cannot be read."""
        ...


def call_kind(path: Any) -> str:
    """What a call asks of the homeserver, without its IDs: `rooms/send`, `rooms/typing`,
    `presence`, `media`, … (a metric's label: a few dozen values, all from this code's paths)."""
    parts = str(path).lstrip("/").split("/")
    if parts[:2] == ["_matrix", "client"]:
        version = parts[2] if len(parts) > 3 else ""  # v3, v1, r0, unstable
        parts = parts[3:] if version in ("r0", "unstable") or version[1:].isdigit() else parts[2:]
    elif parts[:1] == ["_matrix"] and len(parts) > 1:
        return parts[1]
    if parts[:1] == ["rooms"] and len(parts) > 2:
        return f"rooms/{parts[2]}"
    return parts[0] if parts and parts[0] else "other"


class MatrixAPI:
    """Client-server calls as one appservice user (the bot unless `as_user` says otherwise).

    With `crypto`, what is sent to an encrypted room is encrypted (room events; state events
    and redactions cannot be), and the events read back (`get_event`, `messages`, `thread`)
    are decrypted where the bot has their key."""

    def __init__(
        self,
        base_url: str,
        as_token: str,
        user_id: str,
        session: aiohttp.ClientSession,
        *,
        timeout: float = 10.0,
        masquerade: bool = False,
        crypto: RoomCrypto | None = None,
        unreachable: asyncio.Event | None = None,
        requests: Counter | None = None,
    ) -> None:
        """`requests`: counts each call by its kind (`call_kind`), labelled `kind`."""
        self.base_url = base_url
        self.user_id = user_id
        self.timeout = timeout
        self.crypto = crypto
        self.unreachable = unreachable or asyncio.Event()
        """Set when a call found the homeserver unreachable (no connection, timed out, 5xx);
        whoever acts on outages clears it. Shared by the `as_user` copies."""
        self._as_token = as_token
        self._session = session
        self._requests = requests
        self._http = HTTPAPI(
            base_url,
            as_token,
            client_session=session,
            default_retry_count=0,  # retries belong to the caller, who knows what is safe
            log=logging.getLogger("appservice.http"),  # type: ignore[arg-type]
            as_user_id=UserID(user_id) if masquerade else None,
        )

    def as_user(self, user_id: str) -> MatrixAPI:
        """The same API, acting as another user of the appservice's namespace."""
        return MatrixAPI(
            self.base_url,
            self._as_token,
            user_id,
            self._session,
            timeout=self.timeout,
            masquerade=True,
            crypto=self.crypto,
            unreachable=self.unreachable,
            requests=self._requests,
        )

    async def request(
        self,
        method: Method,
        path: Any,
        content: Mapping[str, Any] | None = None,
        *,
        query: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> JSON:
        result = await self._call(method, path, content, query=query, timeout=timeout)
        return result if isinstance(result, dict) else {}

    async def _call(
        self,
        method: Method,
        path: Any,
        content: Mapping[str, Any] | None = None,
        *,
        query: Mapping[str, str] | None = None,
        timeout: float | None = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        body: Any = raw if raw is not None else dict(content) if content is not None else None
        if self._requests is not None:
            self._requests.labels(kind=call_kind(path)).inc()
        try:
            async with asyncio.timeout(timeout or self.timeout):
                return await self._http.request(
                    method, path, body, headers=headers, query_params=query
                )
        except TimeoutError:
            self.unreachable.set()
            raise HomeserverUnavailable(f"{method} {path}: timed out") from None
        except (MatrixConnectionError, aiohttp.ClientError) as e:
            self.unreachable.set()
            raise HomeserverUnavailable(f"{method} {path}: {e}") from None
        except MautrixRequestError as e:
            status = getattr(e, "http_status", 0)
            if status >= 500:
                self.unreachable.set()
            if status >= 500 or status == 429:
                raise HomeserverUnavailable(f"{method} {path}: HTTP {status}") from None
            errcode = e.errcode or "M_UNKNOWN"
            raise MatrixRequestError(status, errcode, e.message or str(e)) from None

    # Reading -----------------------------------------------------------------------------

    async def versions(self, timeout: float | None = None) -> JSON:
        return await self.request(Method.GET, "/_matrix/client/versions", timeout=timeout)

    async def get_event(self, room_id: str, event_id: str) -> JSON:
        event = await self.request(Method.GET, Path.v3.rooms[room_id].event[event_id])
        return (await self._readable([event]))[0]

    async def _readable(self, events: list[JSON]) -> list[JSON]:
        """Encrypted events decrypted where the bot has the key; the others as they came."""
        if self.crypto is None:
            return events
        readable = []
        for event in events:
            if event.get("type") == "m.room.encrypted":
                try:
                    event = await self.crypto.decrypt(event)
                except Exception as e:  # noqa: BLE001 — kept encrypted; the caller skips it
                    log.debug("event %s stays encrypted: %s", event.get("event_id"), e)
            readable.append(event)
        return readable

    async def get_state_event(
        self, room_id: str, event_type: str, state_key: str = ""
    ) -> JSON | None:
        try:
            return await self.request(
                Method.GET, Path.v3.rooms[room_id].state[event_type][state_key]
            )
        except MatrixRequestError as e:
            if e.errcode == "M_NOT_FOUND":
                return None
            raise

    async def get_state(self, room_id: str) -> list[JSON]:
        result = await self._call(Method.GET, Path.v3.rooms[room_id].state)
        return (
            [event for event in result if isinstance(event, dict)]
            if isinstance(result, list)
            else []
        )

    async def messages(
        self,
        room_id: str,
        *,
        direction: str = "b",
        limit: int = 50,
        from_token: str | None = None,
        event_filter: Mapping[str, Any] | None = None,
    ) -> JSON:
        """A page of the room's timeline (GET /messages): `chunk`, `start`, `end`."""
        query = {"dir": direction, "limit": str(limit)}
        if from_token:
            query["from"] = from_token
        if event_filter:
            query["filter"] = json.dumps(event_filter)
        page = await self.request(Method.GET, Path.v3.rooms[room_id].messages, query=query)
        chunk = page.get("chunk")
        if isinstance(chunk, list):
            page["chunk"] = await self._readable([e for e in chunk if isinstance(e, dict)])
        return page

    async def thread(self, room_id: str, root: str, limit: int = 50) -> list[JSON]:
        """The thread's latest events (not the root), newest first."""
        result = await self.request(
            Method.GET,
            Path.v1.rooms[room_id].relations[root]["m.thread"],
            query={"limit": str(limit), "dir": "b"},
        )
        chunk = result.get("chunk", [])
        events = [e for e in chunk if isinstance(e, dict)] if isinstance(chunk, list) else []
        return await self._readable(events)

    async def joined_members(self, room_id: str) -> dict[str, JSON]:
        result = await self.request(Method.GET, Path.v3.rooms[room_id].joined_members)
        joined = result.get("joined", {})
        return joined if isinstance(joined, dict) else {}

    # Sending -----------------------------------------------------------------------------

    async def send_event(
        self, room_id: str, event_type: str, content: Mapping[str, Any], txn_id: str | None = None
    ) -> str:
        """Send a room event. The same txn_id for the same user sends it once (retry-safe)."""
        if self.crypto is not None:
            event_type, content = await self.crypto.encrypt(room_id, event_type, dict(content))
        path = Path.v3.rooms[room_id].send[event_type][txn_id or new_txn_id()]
        result = await self.request(Method.PUT, path, content)
        return str(result["event_id"])

    async def upload_limit(self) -> int | None:
        """The homeserver's largest upload, in bytes (None: it does not say)."""
        result = await self.request(Method.GET, "/_matrix/client/v1/media/config")
        limit = result.get("m.upload.size")
        return limit if isinstance(limit, int) else None

    async def upload(self, data: bytes, filename: str, content_type: str) -> str:
        """Put a file in the homeserver's media repository; its mxc:// URI."""
        result = await self._call(
            Method.POST,
            MediaPath.v3.upload,
            raw=data,
            headers={"Content-Type": content_type},
            query={"filename": filename},
            timeout=max(self.timeout, 120),
        )
        return str(result["content_uri"])

    async def download(self, mxc: str, *, max_bytes: int, timeout: float = 120) -> bytes:
        """A file of the media repository, through authenticated media (/_matrix/client/v1,
        which Synapse requires for new media), read up to `max_bytes` (MediaTooLarge past it:
        the size the sender's client announced is not trusted)."""
        match = _MXC.match(mxc)
        if match is None:
            raise MatrixRequestError(400, "M_INVALID_PARAM", f"not an mxc:// URI: {mxc[:80]!r}")
        server, media_id = match.groups()
        url = f"{self.base_url}/_matrix/client/v1/media/download/{server}/{media_id}"
        what = f"download {mxc}"
        try:
            async with (
                asyncio.timeout(timeout),
                self._session.get(
                    url,
                    headers={"Authorization": f"Bearer {self._as_token}"},
                    params={"allow_redirect": "true"},
                ) as response,
            ):
                if response.status >= 500 or response.status == 429:
                    raise HomeserverUnavailable(f"{what}: HTTP {response.status}")
                if response.status != 200:
                    try:
                        error = await response.json(content_type=None)
                    except (ValueError, aiohttp.ClientError):
                        error = {}
                    error = error if isinstance(error, dict) else {}
                    raise MatrixRequestError(
                        response.status,
                        str(error.get("errcode", "M_UNKNOWN")),
                        str(error.get("error", "")),
                    )
                if (response.content_length or 0) > max_bytes:
                    raise MediaTooLarge(response.content_length or 0, max_bytes)
                chunks = []
                total = 0
                async for chunk in response.content.iter_chunked(1 << 16):
                    total += len(chunk)
                    if total > max_bytes:
                        raise MediaTooLarge(total, max_bytes)
                    chunks.append(chunk)
                return b"".join(chunks)
        except TimeoutError:
            raise HomeserverUnavailable(f"{what}: timed out") from None
        except aiohttp.ClientError as e:
            raise HomeserverUnavailable(f"{what}: {e}") from None

    async def send_text(
        self, room_id: str, body: str, *, txn_id: str | None = None, **kwargs: Any
    ) -> str:
        return await self.send_event(
            room_id, "m.room.message", text_content(body, **kwargs), txn_id
        )

    async def send_notice(
        self, room_id: str, body: str, *, txn_id: str | None = None, **kwargs: Any
    ) -> str:
        content = text_content(body, notice=True, **kwargs)
        return await self.send_event(room_id, "m.room.message", content, txn_id)

    async def send_markdown(
        self, room_id: str, markdown: str, *, txn_id: str | None = None, **kwargs: Any
    ) -> str:
        content = markdown_content(markdown, **kwargs)
        return await self.send_event(room_id, "m.room.message", content, txn_id)

    async def edit(
        self, room_id: str, event_id: str, new_content: JSON, *, txn_id: str | None = None
    ) -> str:
        content = edit_content(event_id, new_content)
        return await self.send_event(room_id, "m.room.message", content, txn_id)

    async def react(
        self, room_id: str, event_id: str, key: str, *, txn_id: str | None = None
    ) -> str:
        content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": key}}
        return await self.send_event(room_id, "m.reaction", content, txn_id)

    async def redact(
        self, room_id: str, event_id: str, reason: str | None = None, *, txn_id: str | None = None
    ) -> str:
        path = Path.v3.rooms[room_id].redact[event_id][txn_id or new_txn_id()]
        result = await self.request(Method.PUT, path, {"reason": reason} if reason else {})
        return str(result.get("event_id", ""))

    async def send_state(
        self, room_id: str, event_type: str, content: Mapping[str, Any], state_key: str = ""
    ) -> str:
        path = Path.v3.rooms[room_id].state[event_type][state_key]
        result = await self.request(Method.PUT, path, content)
        return str(result["event_id"])

    async def set_typing(self, room_id: str, typing: bool, timeout_ms: int = 30_000) -> None:
        content: JSON = {"typing": typing}
        if typing:
            content["timeout"] = timeout_ms
        await self.request(Method.PUT, Path.v3.rooms[room_id].typing[self.user_id], content)

    async def get_presence(self, user_id: str) -> JSON:
        return await self.request(Method.GET, Path.v3.presence[user_id].status)

    async def set_presence(self, presence: str, status_msg: str | None = None) -> None:
        content: JSON = {"presence": presence}
        if status_msg is not None:
            content["status_msg"] = status_msg
        await self.request(Method.PUT, Path.v3.presence[self.user_id].status, content)

    # Best effort ---------------------------------------------------------------------------

    async def set_typing_no_fail(
        self, room_id: str, typing: bool, timeout_ms: int = 30_000
    ) -> None:
        try:
            await self.set_typing(room_id, typing, timeout_ms)
        except Exception as e:
            log.warning("could not set typing in %s: %s", room_id, e)

    async def set_presence_no_fail(self, presence: str, status_msg: str | None = None) -> None:
        try:
            await self.set_presence(presence, status_msg)
        except Exception as e:
            log.warning("could not set presence %s: %s", presence, e)

    async def react_no_fail(
        self, room_id: str, event_id: str, key: str, *, txn_id: str | None = None
    ) -> None:
        try:
            await self.react(room_id, event_id, key, txn_id=txn_id)
        except MatrixRequestError as e:
            if e.errcode != "M_DUPLICATE_ANNOTATION":
                log.warning("could not react %s to %s: %s", key, event_id, e)
        except Exception as e:
            log.warning("could not react %s to %s: %s", key, event_id, e)

    # Membership and rooms ----------------------------------------------------------------

    async def join(self, room_id: str) -> None:
        await self.request(Method.POST, Path.v3.rooms[room_id].join, {})

    async def leave(self, room_id: str) -> None:
        await self.request(Method.POST, Path.v3.rooms[room_id].leave, {})

    async def invite(self, room_id: str, user_id: str) -> None:
        await self.request(Method.POST, Path.v3.rooms[room_id].invite, {"user_id": user_id})

    async def kick(self, room_id: str, user_id: str, reason: str = "") -> None:
        body = {"user_id": user_id, **({"reason": reason} if reason else {})}
        await self.request(Method.POST, Path.v3.rooms[room_id].kick, body)

    async def create_room(self, content: Mapping[str, Any]) -> str:
        result = await self.request(Method.POST, Path.v3.createRoom, content)
        return str(result["room_id"])

    # Account -----------------------------------------------------------------------------

    async def ensure_registered(self) -> None:
        """Register this appservice user; an existing one is fine. No device is made (a device
        without keys would show in people's clients as one that cannot be trusted; the bot's
        device, when encryption is on, is made on purpose: bot/encryption/machine.py)."""
        try:
            await self.request(
                Method.POST,
                Path.v3.register,
                {
                    "type": "m.login.application_service",
                    "username": self.user_id[1:].split(":")[0],
                    "inhibit_login": True,
                },
            )
        except MatrixRequestError as e:
            if e.errcode != "M_USER_IN_USE":
                raise

    async def set_displayname(self, displayname: str) -> None:
        path = Path.v3.profile[self.user_id].displayname
        await self.request(Method.PUT, path, {"displayname": displayname})

    async def nudge_appservice(self, appservice_id: str) -> None:
        """Make the homeserver deliver to this appservice again now.

        Synapse keeps an appservice it could not reach marked down, across its own restarts,
        and drops to-device messages for it meanwhile; it starts retrying only when an event
        for the appservice comes, and then after a backoff. This sends one — in a room of the
        bot's own, nobody else in it, made once and remembered in its account data — waits for
        the first retry's delay and asks for a ping, which retries at once."""
        room_id = await self._own_room()
        # A state event: never encrypted, even where the homeserver encrypts every room (and
        # the bot's keys may not be ready: waking the delivery is how they get ready).
        await self.send_state(room_id, NUDGE_TYPE, {"at": int(time.time() * 1000)})
        await asyncio.sleep(NUDGE_WAIT)
        await self.ping_appservice(appservice_id)

    async def _own_room(self) -> str:
        path = Path.v3.user[self.user_id].account_data[OWN_ROOM_KEY]
        try:
            room_id = (await self.request(Method.GET, path)).get("room_id")
            if (
                isinstance(room_id, str)
                and await self.get_state_event(room_id, "m.room.create") is not None
            ):
                return room_id  # and still in it
        except MatrixRequestError as e:
            if e.status not in (403, 404):
                raise
        room_id = await self.create_room(
            {
                "preset": "private_chat",
                "name": "Doryo (internal)",
                "topic": "The bot's own room: it wakes the homeserver's delivery here.",
                "creation_content": {"m.federate": False},
            }
        )
        await self.request(Method.PUT, path, {"room_id": room_id})
        return room_id

    async def ping_appservice(self, appservice_id: str) -> float:
        """Ask the homeserver to ping us back; it also retries pending transactions at once.

        Returns the round trip in milliseconds, as the homeserver measured it.
        """
        started = time.perf_counter()
        result = await self.request(
            Method.POST,
            f"/_matrix/client/v1/appservice/{appservice_id}/ping",
            {"transaction_id": new_txn_id()},
        )
        return float(result.get("duration_ms", (time.perf_counter() - started) * 1000))
