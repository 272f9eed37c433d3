"""Members' presence, as the homeserver pushes it in ephemeral events.

Synapse drops ephemeral events while the appservice is down, so after a restart the cache starts
empty and fills as people change state; `get` returning None means "not known", not "offline".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Presence:
    user_id: str
    presence: str
    """online, unavailable or offline."""
    status_msg: str | None
    currently_active: bool
    last_active_at: float | None
    """Unix time in seconds of the user's last activity, if the homeserver said."""
    received_at: float
    """Unix time in seconds at which we learned this."""

    @property
    def is_online(self) -> bool:
        return self.presence == "online"


class PresenceCache:
    def __init__(
        self, clock: Callable[[], float] = time.time, *, max_age: float | None = None
    ) -> None:
        """`max_age`: seconds after which what is known counts as not known (for a process that
        does not hear the homeserver's presence updates, only what it asked)."""
        self._clock = clock
        self._max_age = max_age
        self._by_user: dict[str, Presence] = {}
        self._changed = asyncio.Condition()

    def get(self, user_id: str) -> Presence | None:
        known = self._by_user.get(user_id)
        if known is not None and self._max_age is not None:
            if self._clock() - known.received_at > self._max_age:
                return None
        return known

    def is_online(self, user_id: str) -> bool | None:
        """True/False when known; None when the homeserver has not told us yet."""
        known = self.get(user_id)
        return None if known is None else known.is_online

    def __len__(self) -> int:
        return len(self._by_user)

    async def update(self, event: Mapping[str, Any]) -> Presence | None:
        """Apply an m.presence ephemeral event. Malformed ones are ignored."""
        content = event.get("content")
        sender = event.get("sender")
        if not isinstance(content, Mapping) or not isinstance(sender, str):
            return None
        state = content.get("presence")
        if state not in ("online", "unavailable", "offline"):
            return None
        now = self._clock()
        ago = content.get("last_active_ago")
        status = content.get("status_msg")
        presence = Presence(
            user_id=sender,
            presence=state,
            status_msg=status if isinstance(status, str) else None,
            currently_active=bool(content.get("currently_active", False)),
            last_active_at=now - ago / 1000 if isinstance(ago, int | float) else None,
            received_at=now,
        )
        self._by_user[sender] = presence
        async with self._changed:
            self._changed.notify_all()
        return presence

    async def wait_for(
        self, user_id: str, predicate: Callable[[Presence], bool], timeout: float
    ) -> Presence:
        """Wait until the user's presence satisfies `predicate` (TimeoutError after `timeout`)."""
        async with asyncio.timeout(timeout), self._changed:
            while True:
                known = self._by_user.get(user_id)
                if known is not None and predicate(known):
                    return known
                await self._changed.wait()
