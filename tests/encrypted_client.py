"""A person with encryption on, as Element would be: matrix-nio with its Olm machine (vodozemac),
a device of its own, its keys in a store on disk.

`step()` is one round of what a client does in its sync loop: sync, upload its keys when the
server has too few, query the devices of people it shares rooms with, claim one-time keys for
the Olm sessions it needs. Events it receives (decrypted where it can) are kept in `events`.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from nio import (
    AsyncClient,
    AsyncClientConfig,
    Event,
    LoginResponse,
    MegolmEvent,
    RoomCreateResponse,
    RoomSendResponse,
)

from appservice.matrix import ENCRYPTION_STATE


class EncryptedUser:
    def __init__(self, client: AsyncClient, password: str, homeserver: str) -> None:
        self.client = client
        self.password = password
        self.homeserver = homeserver
        self.events: list[Event] = []
        client.add_event_callback(self._received, Event)

    @property
    def user_id(self) -> str:
        return str(self.client.user_id)

    @property
    def device_id(self) -> str:
        return str(self.client.device_id)

    @classmethod
    async def register(cls, synapse: Any, store: Path, name: str = "user") -> EncryptedUser:
        localpart = f"{name}_{uuid.uuid4().hex[:6]}"
        password = secrets.token_urlsafe(12)
        await synapse.register_user(localpart, password)
        return await cls.login(synapse.url, f"@{localpart}:{synapse.server_name}", password, store)

    @classmethod
    async def login(
        cls, homeserver: str, user_id: str, password: str, store: Path
    ) -> EncryptedUser:
        """A new device of this person (its own key store)."""
        await asyncio.to_thread(store.mkdir, parents=True, exist_ok=True)
        client = AsyncClient(
            homeserver,
            user_id,
            store_path=str(store),
            config=AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True),
        )
        response = await client.login(password, device_name="test device")
        assert isinstance(response, LoginResponse), response
        user = cls(client, password, homeserver)
        await user.step()
        return user

    async def _received(self, room: Any, event: Event) -> None:
        event.source.setdefault("room_id", room.room_id)
        self.events.append(event)

    def in_room(self, room_id: str) -> list[Event]:
        return [e for e in self.events if e.source.get("room_id") == room_id]

    async def send_raw(self, room_id: str, event_type: str, content: dict[str, Any]) -> str:
        """An event sent as it is, never encrypted (Element sends reactions this way)."""
        url = (
            f"{self.homeserver}/_matrix/client/v3/rooms/{room_id}/send/{event_type}/"
            f"{uuid.uuid4().hex}"
        )
        headers = {"Authorization": f"Bearer {self.client.access_token}"}
        async with aiohttp.ClientSession() as session:
            async with session.put(url, json=content, headers=headers) as response:
                body = await response.json()
                assert response.status == 200, body
        return str(body["event_id"])

    async def step(self, timeout_ms: int = 300) -> None:
        client = self.client
        await client.sync(timeout=timeout_ms, full_state=client.next_batch is None)
        if client.should_upload_keys:
            await client.keys_upload()
        if client.should_query_keys:
            await client.keys_query()
        if client.should_claim_keys:
            await client.keys_claim(client.get_users_for_key_claiming())

    async def until(self, predicate: Callable[[list[Event]], Any], timeout: float = 30) -> Any:
        """Sync until `predicate(events)` is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            found = predicate(self.events)
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out; events: {[type(e).__name__ for e in self.events][-20:]}"
                )
            await self.step()

    async def create_room(self, *, encrypted: bool = True, **kwargs: Any) -> str:
        initial = [ENCRYPTION_STATE] if encrypted else []
        response = await self.client.room_create(initial_state=initial, **kwargs)
        assert isinstance(response, RoomCreateResponse), response
        await self.step()
        return str(response.room_id)

    async def wait_joined(self, room_id: str, user_id: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            room = self.client.rooms.get(room_id)
            if room is not None and user_id in room.users:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{user_id} did not join {room_id}")
            await self.step()

    async def send(self, room_id: str, body: str, **content: Any) -> str:
        """A message, encrypted if the room is (for every device of the people there)."""
        await self.client.joined_members(room_id)
        if self.client.should_query_keys:
            await self.client.keys_query()
        response = await self.client.room_send(
            room_id,
            "m.room.message",
            {"msgtype": "m.text", "body": body, **content},
            ignore_unverified_devices=True,
        )
        assert isinstance(response, RoomSendResponse), response
        return str(response.event_id)

    async def raw_messages(self, room_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """The room's latest events as the homeserver holds them (encrypted ones encrypted)."""
        url = f"{self.homeserver}/_matrix/client/v3/rooms/{room_id}/messages"
        headers = {"Authorization": f"Bearer {self.client.access_token}"}
        async with aiohttp.ClientSession() as session:
            async with session.get(
                url, params={"dir": "b", "limit": str(limit)}, headers=headers
            ) as response:
                body = await response.json()
        return list(body.get("chunk", []))

    async def query_keys(self, user_id: str) -> dict[str, Any]:
        """The homeserver's answer to /keys/query for this person (device and cross-signing
        keys with their signatures)."""
        url = f"{self.homeserver}/_matrix/client/v3/keys/query"
        headers = {"Authorization": f"Bearer {self.client.access_token}"}
        async with aiohttp.ClientSession() as session:
            async with session.post(
                url, json={"device_keys": {user_id: []}}, headers=headers
            ) as response:
                return dict(await response.json())

    def from_sender(self, sender: str) -> list[Event]:
        return [e for e in self.events if getattr(e, "sender", None) == sender]

    def undecrypted(self) -> list[MegolmEvent]:
        return [e for e in self.events if isinstance(e, MegolmEvent)]

    async def close(self) -> None:
        await self.client.close()


async def settle(*users: EncryptedUser, rounds: int = 2) -> None:
    for _ in range(rounds):
        await asyncio.gather(*(u.step(0) for u in users))
