"""Transaction parsing: what is a well-formed event, what makes a duplicate."""

from __future__ import annotations

from typing import Any

import pytest

from appservice.transactions import fingerprint, is_well_formed

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
