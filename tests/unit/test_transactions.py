"""Transaction parsing: what is a well-formed event, what makes a duplicate."""

from __future__ import annotations

from typing import Any

import pytest

from appservice.transactions import crypto_part, fingerprint, is_well_formed

GOOD = {
    "event_id": "$a",
    "room_id": "!r:x",
    "type": "m.room.message",
    "sender": "@u:x",
    "content": {},
}


@pytest.mark.parametrize(
    ("event", "ok"),
    [
        (GOOD, True),
        ({**GOOD, "content": None}, False),
        ({k: v for k, v in GOOD.items() if k != "content"}, True),  # redacted events lose content
        ({**GOOD, "event_id": 5}, False),
        ({**GOOD, "event_id": "a"}, False),
        ({**GOOD, "room_id": "r"}, False),
        ({k: v for k, v in GOOD.items() if k != "type"}, False),
        ({k: v for k, v in GOOD.items() if k != "sender"}, False),
        ("not an object", False),
        (None, False),
    ],
)
def test_is_well_formed(event: Any, ok: bool) -> None:
    assert is_well_formed(event) is ok


def test_fingerprint_depends_on_event_ids_not_serialization() -> None:
    typing: dict[str, Any] = {"type": "m.typing", "room_id": "!r:x", "content": {"user_ids": []}}
    assert fingerprint(["$a", "$b"], [typing]) == fingerprint(
        ["$a", "$b"], [dict(reversed(typing.items()))]
    )
    assert fingerprint(["$a", "$b"], []) != fingerprint(["$a", "$c"], [])
    assert fingerprint(["$a"], []) != fingerprint(["$a"], [typing])
    assert fingerprint(["$ab"], []) != fingerprint(["$a", "b"], [])


def test_crypto_part_reads_stable_and_unstable_names_and_drops_malformed_parts() -> None:
    message = {"type": "m.room.encrypted", "sender": "@a:hs", "content": {"ciphertext": {}}}
    body = {
        "de.sorunome.msc2409.to_device": [
            message,
            "junk",
            {"type": "x"},
            {**message, "content": 1},
        ],
        "org.matrix.msc3202.device_lists": {"changed": ["@a:hs", 5], "left": "nope"},
        "org.matrix.msc3202.device_one_time_keys_count": {
            "@bot:hs": {"D": {"signed_curve25519": 3}}
        },
        "device_unused_fallback_key_types": "not a map",
    }
    part = crypto_part(body)
    assert part == {
        "to_device": [message],
        "device_lists": {"changed": ["@a:hs"]},
        "otk_counts": {"@bot:hs": {"D": {"signed_curve25519": 3}}},
    }
    assert crypto_part({"events": []}) is None
    assert crypto_part({"to_device": "x", "device_lists": {"changed": []}}) is None


def test_a_to_device_message_makes_a_transaction_another_but_key_counts_do_not() -> None:
    """Synapse on SQLite reuses transaction IDs: two transactions with only to-device messages
    must not look alike; a retry whose key counts changed must."""
    one = {"to_device": [{"type": "m.room.encrypted", "content": {"ciphertext": "1"}}]}
    two = {"to_device": [{"type": "m.room.encrypted", "content": {"ciphertext": "2"}}]}
    assert fingerprint([], [], one) != fingerprint([], [], two)
    assert fingerprint([], [], {**one, "otk_counts": {"@b:hs": {"D": {}}}}) == fingerprint(
        [], [], one
    )
