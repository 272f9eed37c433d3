"""Who said it: people say "I …", questions name them. Two people state the same kind of fact;
a question naming one finds that person's message first — by meaning, by words and both. And on
the benchmark's small fixture (tests/data/conversations.py), the default hybrid search is never
below either of its halves."""

from __future__ import annotations

import statistics
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from bot.memory import Memory, MemoryInput
from tests.data.conversations import as_memories, conversations
from tests.integration.memory.conftest import MemoryFactory


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


async def test_the_person_asked_about_wins_over_others_calling_them_by_name(
    open_memory: MemoryFactory,
) -> None:
    """Maria calls Evan by name about his car, again and again; Evan's own message says "I".
    The question's words and name fill the first search's candidates with Maria's messages
    (5 of them here, 40 by default): searched again without the name, by what it asks, Evan's
    message is found, and first as the person asked about."""
    memory = await open_memory(memory={"candidates": 5})
    maria = "@maria.lopez:hs"
    decoys = [
        "Hey Evan, is your car still making that noise?",
        "Evan, you left your car lights on last night.",
        "Oh Evan, the car wash on the corner finally reopened.",
        "Evan, can I borrow your car charger tomorrow?",
        "Hey Evan, that car alarm woke me up again.",
        "Evan, the car park at work is full every morning now.",
        "Hey Evan, was that your car outside the bakery?",
    ]
    await memory.add_now(
        [said(1, "@evan:hs", "I drive a Mazda these days, great on long trips.")]
        + [said(n, maria, text) for n, text in enumerate(decoys, start=2)]
    )
    for question in ("What car does Evan drive?", "Which car is Evan driving?"):
        for mode in ("hybrid", "vector", "fulltext"):
            hits = await memory.search("w", question, k=1, mode=mode)  # type: ignore[arg-type]
            assert [h.item.event_id for h in hits] == ["$m1"], (question, mode)
    # A name that is nobody's here stays a word of the question: one search, as before.
    hits = await memory.search("w", "Is the car wash on the corner open, Mateo?", k=1)
    assert [h.item.event_id for h in hits] == ["$m4"]


async def test_a_question_that_is_only_a_name_is_searched_once(
    memory: Memory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the name nothing would be left to ask ("What about Evan?" is "what about"): no
    second search, whose ranking of stop words would only add noise to the fusion."""
    await memory.add_now(
        [
            said(1, "@evan:hs", "I drive a Mazda these days, great on long trips."),
            said(2, "@maria.lopez:hs", "Hey Evan, is your car still making that noise?"),
        ]
    )
    searched: list[str] = []
    candidates = memory._candidates

    async def counted(workspace_id: str, query: str, *args: Any) -> Any:
        searched.append(query)
        return await candidates(workspace_id, query, *args)

    monkeypatch.setattr(memory, "_candidates", counted)
    hits = await memory.search("w", "What about Evan?", k=2)
    assert searched == ["What about Evan?"]
    assert {h.item.event_id for h in hits} == {"$m1", "$m2"}
    searched.clear()
    await memory.search("w", "What car does Evan drive?", k=2)
    assert sorted(searched) == ["What car does Evan drive?", "What car does drive?"]


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


async def test_a_workspaces_people_are_read_one_probe_each(memory: Memory) -> None:
    await memory.add_now(
        [said(n, f"@{who}:hs", f"Message {n} from {who}.") for n, who in enumerate("bcabca", 1)]
        + [replace(said(9, "@zed:hs", "Elsewhere."), workspace_id="other")]
    )
    assert await memory.store.senders("w", limit=10) == ["@a:hs", "@b:hs", "@c:hs"]
    assert await memory.store.senders("w", limit=2) == ["@a:hs", "@b:hs"]
    assert await memory.store.senders("other", limit=10) == ["@zed:hs"]
    assert await memory.store.senders("nobody", limit=10) == []
    async with memory.store.pool.acquire() as conn:
        await conn.execute("SET enable_seqscan = off")  # a few rows: the index only if it fits
        plan = await conn.fetch(
            "EXPLAIN SELECT sender FROM memory_items WHERE workspace_id = 'w' AND sender > '@a'"
            " ORDER BY sender LIMIT 1"
        )
    assert "memory_items_sender" in " ".join(r[0] for r in plan)
