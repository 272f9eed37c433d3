"""The pure parts of bot.core.leases and the roles' configuration checks."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from appservice.presence import PresenceCache
from bot.app import check_role
from bot.core.config import config_from_overrides
from bot.core.errors import ConfigError
from bot.core.leases import preferred, room_key, wake_payloads, woken_rooms


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


def test_each_room_has_one_preferred_process_and_a_leaving_one_moves_only_its_rooms() -> None:
    rooms = [f"!room{n}:example.org" for n in range(2000)]
    keys = [11, 2_000_000_000, 37, 90210]
    first = {room: preferred(room, keys) for room in rooms}
    assert first == {room: preferred(room, list(reversed(keys))) for room in rooms}
    shares = Counter(first.values())
    assert set(shares) == set(keys)
    assert all(350 < n < 650 for n in shares.values()), shares  # about a quarter each
    after = {room: preferred(room, [k for k in keys if k != 37]) for room in rooms}
    moved = {room for room in rooms if after[room] != first[room]}
    assert moved == {room for room in rooms if first[room] == 37}
    assert preferred("!a:b", []) is None


TOKENS = {"appservice": {"as_token": "a" * 32, "hs_token": "h" * 32}}


def test_receivers_and_workers_need_a_shared_database() -> None:
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
    for role in ("all", "receiver", "worker"):
        check_role(shared, role)  # encryption too: the workers use the receiver's device
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
