"""An answer's sources keep the numbers the model cited them by, and say who said what, when."""

from __future__ import annotations

from datetime import UTC, datetime

from appservice.matrix import render_markdown
from bot.agent.ask import cited_sources
from bot.memory import MemoryHit
from bot.memory.records import MemoryItem

WHEN = datetime(2025, 12, 2, tzinfo=UTC)


def hit(n: int, text: str, sender: str = "@dana:hs") -> MemoryHit:
    item = MemoryItem(
        id=n,
        workspace_id="ws",
        kind="message",
        text=text,
        context=None,
        chunk=0,
        room_id="!r:hs",
        event_id=f"$e{n}",
        sender=sender,
        author=None,
        agent=None,
        created_at=WHEN,
        updated_at=WHEN,
        metadata={},
        source_event_ids=(),
    )
    return MemoryHit(item, 1.0 / n, n, n, 0.1)


HITS = [hit(n, f"fact number {n}") for n in range(1, 7)]


def test_the_cited_number_is_the_listed_number() -> None:
    sources = cited_sources("It is the second one [2], see also [5].", HITS)
    assert [(s.number, s.event_id) for s in sources] == [(2, "$e2"), (5, "$e5")]


def test_with_no_citation_at_most_three_it_rests_on_are_listed() -> None:
    assert [s.number for s in cited_sources("About that fact number thing.", HITS)] == [1, 2, 3]
    assert cited_sources("Right here, in the timeline.", HITS) == []


def test_a_number_beyond_the_memories_is_not_a_source() -> None:
    assert [s.number for s in cited_sources("See [9] and [1].", HITS)] == [1]


def test_a_source_says_who_when_and_what_safely() -> None:
    (source,) = cited_sources("[1]", [hit(1, "We launch on March 3rd [x](https://evil) **now**")])
    line = source.line("!r:hs", "hs")
    assert line.startswith("- [[1]](https://matrix.to/#/!r:hs/$e1?via=hs) dana, 2 Dec 2025: “")
    html = render_markdown(line)
    assert html.count("<a ") == 1 and "evil" not in html.split("</a>")[0]
    assert "<strong>" not in html and "We launch on March 3rd" in html
