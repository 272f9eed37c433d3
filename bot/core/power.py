"""Power levels, read the way the homeserver enforces them: pure functions over room state.

From room version 12 on, room creators (the create event's sender and additional_creators) rank
above every power level and are not listed in `users` (MSC4289).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CREATOR_POWER = float("inf")
# Room versions in which creators outrank everyone (12 and the unstable "hydra" versions).
_PRIVILEGED_CREATOR_VERSIONS = frozenset({"12", "org.matrix.hydra.11"})


def creators(create: Mapping[str, Any] | None) -> set[str]:
    """Users who outrank all power levels in this room (none before room version 12)."""
    if not create:
        return set()
    content = create.get("content", {})
    if str(content.get("room_version", "1")) not in _PRIVILEGED_CREATOR_VERSIONS:
        return set()
    found = {str(create.get("sender", ""))}
    extra = content.get("additional_creators", [])
    if isinstance(extra, list):
        found |= {u for u in extra if isinstance(u, str)}
    return found - {""}


def _int(value: Any, default: int) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)  # old rooms may hold numbers as strings
    return default


def user_level(
    power_levels: Mapping[str, Any] | None, create: Mapping[str, Any] | None, user_id: str
) -> float:
    """The user's power in the room; creators of v12 rooms have infinite power."""
    if user_id in creators(create):
        return CREATOR_POWER
    if power_levels is None:
        # No power levels event: the creator has 100, everyone else 0 (spec, auth rules).
        return 100 if create and create.get("sender") == user_id else 0
    content = power_levels.get("content", power_levels)
    users = content.get("users", {})
    if isinstance(users, Mapping) and user_id in users:
        return _int(users[user_id], 0)
    return _int(content.get("users_default"), 0)


def state_level(power_levels: Mapping[str, Any] | None, event_type: str) -> int:
    """The power needed to send a state event of this type."""
    if power_levels is None:
        return 0
    content = power_levels.get("content", power_levels)
    events = content.get("events", {})
    if isinstance(events, Mapping) and event_type in events:
        return _int(events[event_type], 50)
    return _int(content.get("state_default"), 50)


def redact_level(power_levels: Mapping[str, Any] | None) -> int:
    """The power needed to redact someone else's event (anyone may redact their own)."""
    if power_levels is None:
        return 50
    content = power_levels.get("content", power_levels)
    return _int(content.get("redact"), 50)


def can_send_state(
    power_levels: Mapping[str, Any] | None,
    create: Mapping[str, Any] | None,
    user_id: str,
    event_type: str,
) -> bool:
    return user_level(power_levels, create, user_id) >= state_level(power_levels, event_type)
