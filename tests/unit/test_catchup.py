"""Read receipts as the homeserver sends them (and as a hostile one might), and the windows
people type after !catchup."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.agent.catchup import window_start
from bot.core.errors import UserError
from bot.history.read_markers import receipts_in


def test_receipts_in_keeps_main_timeline_reads_and_drops_the_rest() -> None:
    event = {
        "type": "m.receipt",
        "room_id": "!r:hs",
        "content": {
            "$a": {"m.read": {"@ann:hs": {"ts": 1_700_000_000_000}}},
            "$b": {"m.read": {"@bob:hs": {"ts": 1_700_000_000_000, "thread_id": "$root"}}},
            "$c": {"m.read": {"@cid:hs": {"ts": 1_700_000_000_000, "thread_id": "main"}}},
            "$d": {"m.read.private": {"@dan:hs": {"ts": 1}}},
            "$e": "junk",
            "$f": {"m.read": {"@eve:hs": "junk", "@fay:hs": {"ts": "soon"}}},
            7: {"m.read": {"@gus:hs": {"ts": 1}}},
        },
    }
    found = {(m.user_id, m.event_id) for m in receipts_in(event)}
    assert found == {("@ann:hs", "$a"), ("@cid:hs", "$c"), ("@fay:hs", "$f")}
    fay = next(m for m in receipts_in(event) if m.user_id == "@fay:hs")
    assert fay.read_at > datetime.now(UTC) - timedelta(minutes=1)  # a bad ts: now
    assert list(receipts_in({"type": "m.receipt", "room_id": "!r:hs", "content": []})) == []
    assert list(receipts_in({"type": "m.typing", "room_id": "!r:hs", "content": {}})) == []


def test_windows_people_type() -> None:
    now = datetime(2026, 12, 4, 15, 30, tzinfo=UTC)
    assert window_start("", now) is None
    start, said = window_start("2h", now) or (None, "")
    assert start == now - timedelta(hours=2) and said == "2 hours ago"
    assert (window_start("last 30 min", now) or (None,))[0] == now - timedelta(minutes=30)
    assert (window_start("since yesterday", now) or (None,))[0] == datetime(
        2026, 12, 3, tzinfo=UTC
    )
    assert (window_start("today", now) or (None,))[0] == datetime(2026, 12, 4, tzinfo=UTC)
    for bad in ("0h", "2 fortnights", "-1d", "99999d", "200d", "²h"):
        with pytest.raises(UserError):
            window_start(bad, now)
