"""Retention: old messages compacted into summaries (an LLM's, or the extractive fallback) or
deleted, per workspace."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from bot.memory import Memory, MemoryInput, MemoryItem
from tests.integration.memory.conftest import MemoryFactory

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

OLD_LAUNCH = [
    "Morning! Let's decide the launch date today.",
    "I'd propose the launch on March 19, the payment provider needs the extra week.",
    "ok",
    "Agreed: the launch is March 19, at 10:00 CET.",
    "Greta will tell the journalists about the new launch date.",
    "👍",
]


async def seed(memory: Memory, workspace: str = "ws") -> None:
    items = []
    for i, text in enumerate(OLD_LAUNCH):  # 90 days ago, one room
        items.append(
            MemoryInput(
                workspace_id=workspace,
                text=text,
                room_id="!launch:hs",
                event_id=f"$old{i}",
                sender="@alice:hs" if i % 2 else "@bob:hs",
                created_at=NOW - timedelta(days=90, minutes=-i),
            )
        )
    for i in range(3):  # 60 days ago, another room
        items.append(
            MemoryInput(
                workspace_id=workspace,
                text=f"Backup drill number {i} took 47 minutes.",
                room_id="!ops:hs",
                event_id=f"$ops{i}",
                sender="@emil:hs",
                created_at=NOW - timedelta(days=60, minutes=-i),
            )
        )
    for i in range(2):  # recent
        items.append(
            MemoryInput(
                workspace_id=workspace,
                text=f"Recent message {i}.",
                room_id="!launch:hs",
                event_id=f"$new{i}",
                created_at=NOW - timedelta(days=2),
            )
        )
    items.append(  # an old fact stays: retention is about messages
        MemoryInput(
            workspace_id=workspace,
            text="The office code is 1234.",
            kind="fact",
            created_at=NOW - timedelta(days=400),
        )
    )
    await memory.indexer.add(items)
    await memory.indexer.flush()


async def test_old_messages_are_compacted_into_summaries(memory: Memory) -> None:
    await seed(memory)
    await seed(memory, "other")
    result = await memory.prune("ws", days=30, now=NOW)
    assert (result.deleted, result.summaries) == (len(OLD_LAUNCH) + 3, 2)
    stats = await memory.stats("ws")
    assert stats.by_kind == {"message": 2, "summary": 2, "fact": 1}
    assert (await memory.stats("other")).by_kind == {"message": 11, "fact": 1}  # untouched

    summaries = await memory.search("ws", "launch date", kinds=["summary"], k=5)
    launch = next(h.item for h in summaries if h.item.room_id == "!launch:hs")
    assert launch.text.startswith("Summary of 6 messages from 2025-03-03 12:00 to")
    assert "Agreed: the launch is March 19" in launch.text
    assert "- @alice:hs:" in launch.text and "👍" not in launch.text
    assert launch.source_event_ids == tuple(f"$old{i}" for i in range(6))
    assert launch.metadata["source"] == "retention" and launch.metadata["messages"] == 6
    assert launch.created_at == NOW - timedelta(days=90, minutes=-5)
    # Found by meaning, like any memory.
    hits = await memory.search("ws", "when did we say the product ships?", k=1)
    assert hits[0].item.id == launch.id

    # Running again finds nothing more; redacting a source message removes the summary.
    assert (await memory.prune("ws", days=30, now=NOW)).deleted == 0
    await memory.indexer.delete_event("ws", "$old3")
    await memory.indexer.flush()
    assert (await memory.stats("ws")).by_kind == {"message": 2, "summary": 1, "fact": 1}


async def test_a_summarizer_is_used_and_stood_in_for_when_it_fails(memory: Memory) -> None:
    await seed(memory)
    seen: list[list[str]] = []

    async def llm(messages: Sequence[MemoryItem]) -> str:
        seen.append([m.text for m in messages])
        if messages[0].room_id == "!ops:hs":
            raise RuntimeError("the model is down")
        return "The team moved the launch to March 19."

    result = await memory.prune("ws", days=30, summarizer=llm, now=NOW)
    assert result.summaries == 2
    assert seen[0] == OLD_LAUNCH and len(seen[1]) == 3
    texts = sorted(
        h.item.text for h in await memory.search("ws", "x", kinds=["summary"], mode="vector", k=5)
    )
    assert texts[0].startswith("Summary of 3 messages")  # the extractive stand-in
    assert texts[1] == "The team moved the launch to March 19."


async def test_delete_mode_and_defaults(open_memory: MemoryFactory) -> None:
    memory = await open_memory(memory={"retention_days": 30, "retention_mode": "delete"})
    await seed(memory)
    assert (await memory.prune("ws", days=0, now=NOW)).deleted == 0  # 0 keeps everything
    result = await memory.prune("ws", now=NOW)
    assert (result.deleted, result.summaries) == (9, 0)
    assert (await memory.stats("ws")).by_kind == {"message": 2, "fact": 1}


async def test_prune_all_with_settings_per_workspace(open_memory: MemoryFactory) -> None:
    memory = await open_memory(memory={"retention_days": 75})
    for workspace in ("a", "b", "c"):
        await seed(memory, workspace)
    # b has a setting of its own (30 days); the others none (None: the default, 75 days).
    own = {"b": 30}

    async def days_for(workspace: str) -> int | None:
        return own.get(workspace)

    results = await memory.prune_all(now=NOW)
    assert set(results) == {"a", "b", "c"}
    assert results["a"].deleted == len(OLD_LAUNCH)
    await seed(memory, "d")
    results = await memory.prune_all(days_for=days_for, now=NOW)
    assert set(results) == {"b", "d"}  # a and c have nothing older than 75 days left
    assert results["b"].deleted == 3 and results["d"].deleted == len(OLD_LAUNCH)
    assert (await memory.stats("b")).by_kind == {"message": 2, "summary": 2, "fact": 1}


async def test_no_retention_configured_prunes_nothing(memory: Memory) -> None:
    await seed(memory)
    assert await memory.prune_all(now=NOW) == {}
    assert (await memory.prune("ws", now=NOW)).deleted == 0
