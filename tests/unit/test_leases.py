"""The pure parts of bot.core.leases and the roles' configuration checks."""

from __future__ import annotations

import json

import pytest

from appservice.presence import PresenceCache
from bot.app import check_role
from bot.core.config import config_from_overrides
from bot.core.errors import ConfigError
from bot.core.leases import room_key, wake_payloads, woken_rooms


def test_room_keys_are_stable_32_bit_integers() -> None:
    key = room_key("!abc:example.org")
    assert key == room_key("!abc:example.org")
    assert -(2**31) <= key < 2**31
    assert key != room_key("!abd:example.org")


def test_many_rooms_are_split_into_payloads_under_the_notification_limit() -> None:
    rooms = [f"!{n:04d}{'x' * 60}:example.org" for n in range(500)]
    payloads = wake_payloads(rooms)
    assert len(payloads) > 1
    assert all(len(p.encode()) < 8000 for p in payloads)
    assert [room for p in payloads for room in woken_rooms(p)] == rooms


@pytest.mark.parametrize(
    "payload",
    ["", "not json", "{}", '"!a:b"', "[1, null, {}]", json.dumps(["@user:b", "#alias:b"])],
)
def test_a_forged_or_malformed_wake_up_names_no_room(payload: str) -> None:
    assert woken_rooms(payload) == []


TOKENS = {"appservice": {"as_token": "a" * 32, "hs_token": "h" * 32}}


def test_receivers_and_workers_need_a_shared_database_and_no_encryption() -> None:
    embedded = config_from_overrides({**TOKENS, "database": {"url": "embedded"}})
    check_role(embedded, "all")
    with pytest.raises(ConfigError, match="database.url"):
        check_role(embedded, "worker")
    shared = config_from_overrides(
        {
            **TOKENS,
            "database": {"url": "postgresql://db/doryo"},
            "encryption": {"enabled": True, "pickle_key": "p" * 24},
        }
    )
    check_role(shared, "all")
    with pytest.raises(ConfigError, match="encryption.enabled"):
        check_role(shared, "receiver")
    with pytest.raises(ConfigError, match="--role"):
        check_role(shared, "everything")


def presence(state: str) -> dict[str, object]:
    return {"type": "m.presence", "sender": "@host:x", "content": {"presence": state}}


async def test_a_worker_forgets_presence_it_only_asked_for_after_a_while() -> None:
    """A worker hears no presence updates: what it asked once must not stand for good (an
    offline host would never be seen online again by it)."""
    now = [1000.0]
    cache = PresenceCache(lambda: now[0], max_age=60)
    await cache.update(
        {"type": "m.presence", "sender": "@host:x", "content": {"presence": "offline"}}
    )
    assert cache.is_online("@host:x") is False
    now[0] += 61
    assert cache.get("@host:x") is None and cache.is_online("@host:x") is None
    heard = PresenceCache(lambda: now[0])  # a process that hears the updates keeps them
    await heard.update(
        {"type": "m.presence", "sender": "@host:x", "content": {"presence": "online"}}
    )
    now[0] += 3600
    assert heard.is_online("@host:x") is True
