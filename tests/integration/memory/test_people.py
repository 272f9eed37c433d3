"""Who said it: people say "I …", questions name them. Two people state the same kind of fact;
a question naming one finds that person's message first — by meaning, by words and both. And on
the benchmark's small fixture (tests/data/conversations.py), the default hybrid search is never
below either of its halves."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime

from bot.memory import Memory, MemoryInput
from tests.data.conversations import as_memories, conversations


def said(n: int, sender: str, text: str) -> MemoryInput:
    return MemoryInput(
        workspace_id="w",
        text=text,
        context="catching up",
        room_id="!r:hs",
        event_id=f"$m{n}",
        sender=sender,
        created_at=datetime(2024, 5, n, 12, tzinfo=UTC),
    )


async def test_a_question_naming_a_person_finds_what_they_said_as_i(memory: Memory) -> None:
    await memory.add_now(
        [
            said(1, "@maria.lopez:hs", "I drive a Volvo these days, great on long trips."),
            said(2, "@evan:hs", "I drive a Mazda these days, great on long trips."),
            said(3, "@maria.lopez:hs", "Do you still drive that old car of yours?"),
            said(4, "@evan:hs", "My dog Biscuit chewed my shoes again."),
            said(5, "@maria.lopez:hs", "My dog Pepper chewed my shoes again."),
        ]
    )
    for mode in ("hybrid", "vector", "fulltext"):
        evan = await memory.search("w", "What car does Evan drive?", k=1, mode=mode)  # type: ignore[arg-type]
        assert [h.item.event_id for h in evan] == ["$m2"], mode
        maria = await memory.search("w", "What is the name of Maria's dog?", k=1, mode=mode)  # type: ignore[arg-type]
        assert [h.item.event_id for h in maria] == ["$m5"], mode


async def test_hybrid_is_never_below_its_halves_on_the_small_fixture(memory: Memory) -> None:
    (conv,) = conversations(1, sessions=5, per_session=30, seed=11)
    await memory.add_now(as_memories(conv))
    recall: dict[str, float] = {}
    for mode in ("hybrid", "vector", "fulltext"):
        found = []
        for q in conv.questions:
            hits = await memory.search(conv.id, q.text, k=5, mode=mode)  # type: ignore[arg-type]
            ids = {h.item.event_id for h in hits}
            found.append(len(ids & set(q.evidence)) / len(q.evidence))
        recall[mode] = statistics.fmean(found)
    assert recall["hybrid"] >= max(recall["vector"], recall["fulltext"]), recall
