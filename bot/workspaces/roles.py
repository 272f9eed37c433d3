"""Roles in a workspace, read from the space's power levels: a pure function of room state.

host: power 100 or more (or a creator of a v12 room); delegate: 50 or more (may confirm
actions); member: the rest. The bot and its agent users have no role.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from bot.core import power

Role = Literal["host", "delegate", "member"]
HOST_LEVEL = 100
DELEGATE_LEVEL = 50


def role_of(
    power_levels: Mapping[str, Any] | None, create: Mapping[str, Any] | None, user_id: str
) -> Role:
    level = power.user_level(power_levels, create, user_id)
    if level >= HOST_LEVEL:
        return "host"
    if level >= DELEGATE_LEVEL:
        return "delegate"
    return "member"


def roles(
    power_levels: Mapping[str, Any] | None,
    create: Mapping[str, Any] | None,
    users: Iterable[str],
    namespace: re.Pattern[str],
) -> dict[str, Role]:
    """The role of each user, the appservice's own users left out."""
    return {u: role_of(power_levels, create, u) for u in users if not namespace.match(u)}


def listed_users(
    power_levels: Mapping[str, Any] | None, create: Mapping[str, Any] | None
) -> set[str]:
    """Users the power levels or the create event name: the candidates for host and delegate."""
    found = set(power.creators(create))
    if power_levels:
        content = power_levels.get("content", power_levels)
        users = content.get("users", {})
        if isinstance(users, Mapping):
            found |= {u for u in users if isinstance(u, str)}
    return found


def choose_host(current_host: str, role_by_user: Mapping[str, Role]) -> str:
    """The host the bot speaks to: the recorded one while they keep the role, else another."""
    if role_by_user.get(current_host) == "host":
        return current_host
    hosts = sorted(u for u, r in role_by_user.items() if r == "host")
    return hosts[0] if hosts else current_host
