"""What the bot's handlers ask of its device, wherever the device lives: in this process (the
owner, bot.encryption.machine.Encryption) or in another process of the deployment that this one
calls (a worker's bot.encryption.shared.RemoteDevice)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

JSON = dict[str, Any]


def gets_new_key(before: str, now: str) -> bool:
    """Whether, after this membership change in an encrypted room, the next message needs a new
    room key: for anything but an accepted invite (or no change at all)."""
    return before != now and (before, now) != ("invite", "join")


class Device(Protocol):
    @property
    def device_id(self) -> str: ...

    async def start(self, *, nudge: Callable[[], Awaitable[None]] | None = None) -> None:
        """Ready to encrypt and decrypt; ConfigError if it never can be."""
        ...

    async def stop(self) -> None: ...

    async def check(self) -> None:
        """Raises if the device cannot encrypt and decrypt now (for /ready)."""
        ...

    async def encrypt(self, room_id: str, event_type: str, content: JSON) -> tuple[str, JSON]:
        """The event as it must be sent: encrypted in an encrypted room, as it is elsewhere.
        Raises EncryptionUnavailable rather than send in the clear."""
        ...

    async def decrypt(self, event: JSON, *, wait: float = 0) -> JSON:
        """The event as its sender wrote it; Undecryptable when its key is not there after
        `wait` seconds, NotAccepted when it decrypts to something not to act on."""
        ...

    async def request_key(self, event: JSON) -> None:
        """Ask the sender's devices for the key of a message the bot cannot read."""
        ...

    async def room_encrypted(self, room_id: str, content: JSON) -> None:
        """An m.room.encryption state event was handled: the room is encrypted for good."""
        ...

    async def member_changed(self, room_id: str, user_id: str, before: str, now: str) -> None:
        """Someone's membership changed: in an encrypted room the next message gets a new
        key."""
        ...
