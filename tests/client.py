"""A small Matrix client for tests: a person on the real Synapse, talking to the bot.

It keeps everything /sync returned, so a test can wait for an event that may already have
arrived. Sends retry (with the same transaction ID) while the homeserver is restarting.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp

JSON = dict[str, Any]
_txn_counter = itertools.count()
# Whole timelines: the default of 10 events would silently skip what arrived between two syncs.
_SYNC_FILTER = quote(json.dumps({"room": {"timeline": {"limit": 1000}}}))


class MatrixClient:
    def __init__(self, homeserver: str, user_id: str, access_token: str) -> None:
        self.homeserver = homeserver
        self.user_id = user_id
        self.access_token = access_token
        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {access_token}"},
            timeout=aiohttp.ClientTimeout(total=30),
        )
        self._since: str | None = None
        self.timeline: dict[str, list[JSON]] = {}
        self.invites: dict[str, list[JSON]] = {}
        self.presence: dict[str, JSON] = {}
        self.typing: dict[str, list[set[str]]] = {}
        self.sync_presence = "online"
        """What syncing says of this person (Synapse combines it with PUT /presence)."""
        """Per room, who was typing at each m.typing update, in order."""
        self._sync_lock = asyncio.Lock()

    async def close(self) -> None:
        await self._session.close()

    async def request(
        self, method: str, path: str, body: JSON | None = None, *, retry_until: float = 0
    ) -> JSON:
        """A client-server API call. With retry_until, connection failures and 5xx are retried
        until that monotonic deadline (the homeserver may be restarting)."""
        url = f"{self.homeserver}/_matrix/client{path}"
        while True:
            try:
                async with self._session.request(method, url, json=body) as response:
                    data: JSON = await response.json(content_type=None) or {}
                    if response.status >= 500 and time.monotonic() < retry_until:
                        raise aiohttp.ClientError(f"HTTP {response.status}")
                    if response.status >= 400:
                        raise MatrixClientError(response.status, data)
                    return data
            except (TimeoutError, aiohttp.ClientError):
                if time.monotonic() >= retry_until:
                    raise
                await asyncio.sleep(0.2)

    # Rooms -----------------------------------------------------------------------------------

    async def create_room(self, **body: Any) -> str:
        return str((await self.request("POST", "/v3/createRoom", body))["room_id"])

    async def invite(self, room_id: str, user_id: str) -> None:
        await self.request("POST", f"/v3/rooms/{quote(room_id)}/invite", {"user_id": user_id})

    async def join(self, room_id: str) -> None:
        await self.request("POST", f"/v3/join/{quote(room_id)}", {})

    async def state(self, room_id: str, event_type: str, state_key: str = "") -> JSON:
        path = f"/v3/rooms/{quote(room_id)}/state/{quote(event_type)}/{quote(state_key)}"
        return await self.request("GET", path)

    async def set_state(
        self, room_id: str, event_type: str, content: JSON, state_key: str = ""
    ) -> str:
        path = f"/v3/rooms/{quote(room_id)}/state/{quote(event_type)}/{quote(state_key)}"
        return str((await self.request("PUT", path, content))["event_id"])

    async def send(
        self, room_id: str, event_type: str, content: JSON, *, retry_for: float = 0
    ) -> str:
        txn_id = f"t{next(_txn_counter)}.{uuid.uuid4().hex[:8]}"
        path = f"/v3/rooms/{quote(room_id)}/send/{quote(event_type)}/{txn_id}"
        deadline = time.monotonic() + retry_for if retry_for else 0
        return str((await self.request("PUT", path, content, retry_until=deadline))["event_id"])

    async def send_text(
        self, room_id: str, body: str, *, retry_for: float = 0, **extra: Any
    ) -> str:
        content = {"msgtype": "m.text", "body": body, **extra}
        return await self.send(room_id, "m.room.message", content, retry_for=retry_for)

    async def upload(self, data: bytes, filename: str, content_type: str) -> str:
        """A file in the media repository; its mxc:// URI."""
        url = f"{self.homeserver}/_matrix/media/v3/upload"
        async with self._session.post(
            url,
            data=data,
            params={"filename": filename},
            headers={"Content-Type": content_type},
        ) as response:
            body = await response.json(content_type=None)
            if response.status >= 400:
                raise MatrixClientError(response.status, body)
            return str(body["content_uri"])

    async def send_file(
        self,
        room_id: str,
        filename: str,
        data: bytes,
        mimetype: str,
        *,
        size: int | None = None,
        **extra: Any,
    ) -> str:
        """Post a file as Element does: uploaded, then an m.file with its name, type and size
        (`size`: what the message claims, if not the truth)."""
        url = await self.upload(data, filename, mimetype)
        content = {
            "msgtype": "m.file",
            "body": filename,
            "filename": filename,
            "url": url,
            "info": {"mimetype": mimetype, "size": len(data) if size is None else size},
            **extra,
        }
        return await self.send(room_id, "m.room.message", content)

    async def set_presence(self, presence: str, status_msg: str | None = None) -> None:
        body: JSON = {"presence": presence}
        if status_msg is not None:
            body["status_msg"] = status_msg
        await self.request("PUT", f"/v3/presence/{quote(self.user_id)}/status", body)

    # Sync ------------------------------------------------------------------------------------

    async def sync_once(self, timeout_ms: int = 1000) -> None:
        async with self._sync_lock:
            params = (
                f"?timeout={timeout_ms}&filter={_SYNC_FILTER}&set_presence={self.sync_presence}"
            )
            if self._since:
                params += f"&since={self._since}"
            data = await self.request("GET", f"/v3/sync{params}")
            self._since = data["next_batch"]
            rooms = data.get("rooms", {})
            for room_id, room in rooms.get("join", {}).items():
                timeline = room.get("timeline", {})
                events = timeline.get("events", [])
                # A room joined since the last sync starts limited; in a known one, fetch the gap.
                if timeline.get("limited") and room_id in self.timeline:
                    events = await self._fill_gap(room_id, timeline.get("prev_batch"), events)
                self.timeline.setdefault(room_id, []).extend(
                    {**e, "room_id": room_id} for e in events
                )
                for event in room.get("ephemeral", {}).get("events", []):
                    if event.get("type") == "m.typing":
                        typing = set(event.get("content", {}).get("user_ids", []))
                        self.typing.setdefault(room_id, []).append(typing)
            for room_id, room in rooms.get("invite", {}).items():
                self.invites[room_id] = room.get("invite_state", {}).get("events", [])
            for event in data.get("presence", {}).get("events", []):
                self.presence[event["sender"]] = event

    async def _fill_gap(self, room_id: str, token: str | None, events: list[JSON]) -> list[JSON]:
        """Page back from the sync's prev_batch until the last event already seen."""
        seen = {e["event_id"] for e in self.timeline[room_id]}
        missing: list[JSON] = []
        while token:
            page = await self.request(
                "GET", f"/v3/rooms/{quote(room_id)}/messages?dir=b&limit=100&from={token}"
            )
            chunk = page.get("chunk", [])
            for event in chunk:
                if event["event_id"] in seen:
                    return list(reversed(missing)) + events
                missing.append(event)
            token = page.get("end") if chunk else None
        return list(reversed(missing)) + events

    async def wait_for(
        self,
        room_id: str,
        predicate: Callable[[JSON], bool],
        timeout: float = 15,
        *,
        count: int = 1,
    ) -> list[JSON]:
        """Wait until `count` events of the room's timeline match; returns them in order."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.timeline.get(room_id, []) if predicate(e)]
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                last = [_brief(e) for e in self.timeline.get(room_id, [])[-5:]]
                raise TimeoutError(
                    f"{self.user_id}: {len(found)}/{count} matching events in {room_id} "
                    f"after {timeout} s; last events: {last}"
                )
            await self.sync_once(timeout_ms=500)

    async def wait_for_reply(self, room_id: str, event_id: str, timeout: float = 15) -> JSON:
        """The bot's answer to our event `event_id` (a message replying to it)."""
        found = await self.wait_for(room_id, lambda e: replies_to(e) == event_id, timeout)
        return found[0]


def replies_to(event: JSON) -> str | None:
    relates = event.get("content", {}).get("m.relates_to", {})
    reply = relates.get("m.in_reply_to", {}) if isinstance(relates, dict) else {}
    return reply.get("event_id") if isinstance(reply, dict) else None


def _brief(event: JSON) -> str:
    body = event.get("content", {}).get("body", "")
    return f"{event.get('type')} from {event.get('sender')}: {str(body)[:60]!r}"


class MatrixClientError(Exception):
    def __init__(self, status: int, data: JSON) -> None:
        self.status = status
        self.errcode = data.get("errcode", "")
        super().__init__(f"{status} {self.errcode}: {data.get('error', '')}")
