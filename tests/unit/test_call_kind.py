"""The kind of a call to the homeserver, as the requests metric labels it: its verb, no IDs."""

from __future__ import annotations

import pytest
from mautrix.api import Path

from appservice.matrix import call_kind


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        (Path.v3.rooms["!room:example.org"].send["m.room.message"]["txn1"], "rooms/send"),
        (Path.v3.rooms["!room:example.org"].typing["@bot:example.org"], "rooms/typing"),
        (Path.v3.rooms["!room:example.org"].state["m.room.power_levels"][""], "rooms/state"),
        (Path.v1.rooms["!room:example.org"].relations["$event"], "rooms/relations"),
        (Path.v3.presence["@bot:example.org"].status, "presence"),
        (Path.v3.profile["@bot:example.org"], "profile"),
        ("/_matrix/client/versions", "versions"),
        ("/_matrix/client/r0/sync", "sync"),
        ("/_matrix/media/v3/upload", "media"),
        ("", "other"),
    ],
)
def test_a_call_is_counted_by_its_verb_without_its_ids(path: object, kind: str) -> None:
    assert call_kind(path) == kind


def test_ids_never_become_a_label() -> None:
    """A room's or a user's ID in the label would make one series per room: unbounded."""
    for room in ("!a:x", "!b:y", "!c:z"):
        assert call_kind(Path.v3.rooms[room].send["m.room.message"]["t"]) == "rooms/send"
