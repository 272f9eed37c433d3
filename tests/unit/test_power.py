"""Power levels as the homeserver enforces them, including room version 12's creators."""

from __future__ import annotations

from typing import Any

from bot.core.power import CREATOR_POWER, can_send_state, creators, state_level, user_level

BOT = "@doryo:x"


def create(version: str = "12", sender: str = "@alice:x", **content: Any) -> dict[str, Any]:
    return {
        "type": "m.room.create",
        "sender": sender,
        "content": {"room_version": version, **content},
    }


def levels(**content: Any) -> dict[str, Any]:
    return {"type": "m.room.power_levels", "content": content}


def test_v12_creators_outrank_everyone() -> None:
    room = create(additional_creators=["@bob:x", 5])
    assert creators(room) == {"@alice:x", "@bob:x"}
    assert user_level(levels(users={"@alice:x": 0}), room, "@alice:x") == CREATOR_POWER


def test_older_rooms_have_no_privileged_creators() -> None:
    room = create("10")
    assert creators(room) == set()
    assert user_level(levels(users={"@alice:x": 100}), room, "@alice:x") == 100


def test_levels_and_defaults() -> None:
    pl = levels(
        users={BOT: 50, "@s:x": "75"}, users_default=5, state_default=60, events={"x.y": 20}
    )
    assert user_level(pl, create(), BOT) == 50
    assert user_level(pl, create(), "@s:x") == 75  # old rooms keep numbers as strings
    assert user_level(pl, create(), "@nobody:x") == 5
    assert state_level(pl, "x.y") == 20
    assert state_level(pl, "org.matrix.msc4332.commands") == 60


def test_no_power_levels_event() -> None:
    assert user_level(None, create("10"), "@alice:x") == 100
    assert user_level(None, create("10"), BOT) == 0
    assert state_level(None, "anything") == 0


def test_can_send_state() -> None:
    assert not can_send_state(levels(users={}), create(), BOT, "org.matrix.msc4332.commands")
    assert can_send_state(levels(users={BOT: 50}), create(), BOT, "org.matrix.msc4332.commands")
    assert can_send_state(levels(users={}), create(sender=BOT), BOT, "org.matrix.msc4332.commands")
