"""Memory on the real PostgreSQL + pgvector with the real local model: hybrid search, isolation
between workspaces, redaction and edits, contact details, stats, chunking, remember/forget."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from bot.memory import Memory, MemoryInput
from bot.memory.embeddings import Vectors
from bot.memory.records import ITEM_FIELDS
from tests.integration.memory.conftest import MemoryFactory

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def message(
    workspace: str, event: str, text: str, *, minutes: int = 0, sender: str = "@alice:hs"
) -> MemoryInput:
    return MemoryInput(
        workspace_id=workspace,
        text=text,
        room_id=f"!{workspace}-room:hs",
        event_id=event,
        sender=sender,
        created_at=T0 + timedelta(minutes=minutes),
    )


TEAM = [
    ("$m1", "We decided to launch the new app on March 19 at 10:00."),
    ("$m2", "The staging server lives at staging.example.org, credentials are in the vault."),
    ("$m3", "Lunch today? The falafel truck is back."),
    ("$m4", "The outage was caused by the database running out of connections."),
    ("$m5", "Dana prefers Inter as the font for the whole product."),
    ("$m6", "Our hotel for the offsite is in Alfama, Lisbon."),
]


async def add_team(memory: Memory, workspace: str = "ws-a") -> None:
    await memory.indexer.add(
        message(workspace, event, text, minutes=i) for i, (event, text) in enumerate(TEAM)
    )
    await memory.indexer.flush()


async def test_an_items_columns_are_the_tables(memory: Memory) -> None:
    """The one definition of an item's columns (bot/memory/records.py) is the schema's."""
    columns = await memory.store.pool.fetch(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_name = 'memory_items' AND column_name <> 'tsv' ORDER BY ordinal_position"
    )
    assert sorted(r[0] for r in columns) == sorted(ITEM_FIELDS)


async def test_hybrid_search_finds_by_meaning_and_cites_the_source(memory: Memory) -> None:
    await add_team(memory)
    hits = await memory.search("ws-a", "when is the release date?", k=3)
    assert hits[0].item.event_id == "$m1"
    assert hits[0].item.room_id == "!ws-a-room:hs"
    assert hits[0].item.sender == "@alice:hs"
    assert hits[0].vector_rank == 1 and hits[0].distance is not None
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)

    # No shared word with the answer: full text alone cannot find it, meaning can.
    question = "why did the service go down?"
    assert "$m4" not in [
        h.item.event_id for h in await memory.search("ws-a", question, mode="fulltext")
    ]
    assert (await memory.search("ws-a", question, k=1, mode="vector"))[0].item.event_id == "$m4"

    # Full text alone finds exact words; the hybrid ranks such a match first too.
    words = await memory.search("ws-a", "falafel", mode="fulltext")
    assert [h.item.event_id for h in words] == ["$m3"] and words[0].text_rank == 1
    assert (await memory.search("ws-a", "falafel", k=1))[0].item.event_id == "$m3"


async def test_words_are_searched_while_the_question_is_embedded(memory: Memory) -> None:
    """Only the vector query waits for the question's vector: the search by words has run
    before it arrives. Seen from the data: a message stored while the vector is on its way is
    too new for the words (their query is behind) but not for the meaning (its query is not)."""
    await add_team(memory)
    question = "is the falafel truck back for lunch?"
    vector: asyncio.Future[Vectors] = asyncio.get_running_loop().create_future()
    search = asyncio.create_task(memory.search("ws-a", question, k=10, embedding=vector))
    try:
        # Wait until the search holds its transaction open, idle: it needs the vector now.
        async with asyncio.timeout(10):
            while not await memory.store.pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' "
                "AND state_change < now() - interval '200 milliseconds'"
            ):
                assert not search.done(), await search
                await asyncio.sleep(0.02)
        await memory.indexer.add(
            [message("ws-a", "$late", "The falafel truck is back for lunch!")]
        )
        await memory.indexer.flush()
        vector.set_result(await memory.embed_query(question))
    finally:
        if not vector.done():
            search.cancel()  # never leave its connection waiting
    hits = {h.item.event_id: h for h in await search}
    assert hits["$m3"].text_rank is not None and hits["$m3"].vector_rank is not None
    assert hits["$late"].vector_rank is not None and hits["$late"].text_rank is None


async def test_a_workspace_never_sees_another_workspaces_memory(memory: Memory) -> None:
    await add_team(memory, "ws-a")
    await memory.indexer.add(
        [message("ws-b", "$b1", "We decided to launch the new app on April 2 at 09:00.")]
    )
    await memory.indexer.flush()
    for mode in ("hybrid", "vector", "fulltext"):
        for exact in (None, True, False):
            hits = await memory.search(
                "ws-b", "when do we launch the app?", k=10, mode=mode, exact=exact
            )
            assert [h.item.event_id for h in hits] == ["$b1"], (mode, exact)
            hits = await memory.search(
                "ws-a", "launch the app on April 2", k=10, mode=mode, exact=exact
            )
            assert hits and all(h.item.workspace_id == "ws-a" for h in hits), (mode, exact)
    assert await memory.search("ws-nobody", "launch", k=10) == []
    # The same event ID in two workspaces is two items.
    await memory.indexer.add([message("ws-b", "$m1", "Another team's message.")])
    await memory.indexer.flush()
    assert (await memory.store.by_event("ws-a", "$m1"))[0].text.startswith("We decided")
    assert (await memory.store.by_event("ws-b", "$m1"))[0].text == "Another team's message."


async def test_the_hnsw_path_and_the_exact_path_agree_on_a_small_workspace(
    memory: Memory,
) -> None:
    await add_team(memory)
    for question in ("when do we launch?", "where do we sleep in Portugal?", "database"):
        exact = await memory.search("ws-a", question, k=3, mode="vector", exact=True)
        approximate = await memory.search("ws-a", question, k=3, mode="vector", exact=False)
        assert [h.item.id for h in exact] == [h.item.id for h in approximate]


async def test_kinds_filter(memory: Memory) -> None:
    await add_team(memory)
    fact = await memory.remember("ws-a", "The launch date is March 19.", author="@bob:hs")
    assert fact is not None and fact.kind == "fact"
    for mode in ("hybrid", "vector", "fulltext"):
        hits = await memory.search("ws-a", "launch date", kinds=["fact"], mode=mode)
        assert [h.item.id for h in hits] == [fact.id], mode
        hits = await memory.search("ws-a", "launch date", kinds=["message"], mode=mode)
        assert fact.id not in [h.item.id for h in hits], mode


async def test_redaction_deletes_what_memory_holds_of_a_message(memory: Memory) -> None:
    await add_team(memory)
    await memory.indexer.delete_event("ws-a", "$m6")
    await memory.indexer.flush()
    assert await memory.store.by_event("ws-a", "$m6") == []
    for mode in ("hybrid", "vector", "fulltext"):
        hits = await memory.search("ws-a", "hotel offsite Alfama Lisbon", k=10, mode=mode)
        assert "$m6" not in [h.item.event_id for h in hits], mode
    vectors = await memory.store.pool.fetchval("SELECT count(*) FROM memory_vectors")
    assert vectors == len(TEAM) - 1  # the vector went with the item
    # Redacting an unknown event, or one of another workspace, changes nothing.
    await memory.indexer.delete_event("ws-b", "$m1")
    await memory.indexer.flush()
    assert await memory.store.by_event("ws-a", "$m1")


async def test_add_then_redact_in_one_batch_leaves_nothing(memory: Memory) -> None:
    await memory.indexer.add([message("ws-a", "$x", "A secret that is redacted at once.")])
    await memory.indexer.delete_event("ws-a", "$x")
    await memory.indexer.flush()
    assert await memory.store.by_event("ws-a", "$x") == []


async def test_an_edited_message_is_re_embedded(memory: Memory) -> None:
    await add_team(memory)
    before = (await memory.store.by_event("ws-a", "$m5"))[0]
    await memory.indexer.update_event("ws-a", "$m5", "Dana wants the team offsite in Porto.")
    await memory.indexer.flush()
    items = await memory.store.by_event("ws-a", "$m5")
    assert [i.text for i in items] == ["Dana wants the team offsite in Porto."]
    after = items[0]
    assert (after.sender, after.room_id, after.created_at) == (
        before.sender,
        before.room_id,
        before.created_at,
    )
    assert "edited_at" in after.metadata
    # Searched by its new meaning, not the old one.
    hits = await memory.search("ws-a", "which city for the team trip?", k=2, mode="vector")
    assert "$m5" in [h.item.event_id for h in hits]
    hits = await memory.search("ws-a", "typeface", k=10, mode="fulltext")
    assert "$m5" not in [h.item.event_id for h in hits]
    hits = await memory.search("ws-a", "Which font do we use?", k=1, mode="vector")
    assert hits[0].item.event_id != "$m5"
    # One vector per piece, still.
    count = await memory.store.pool.fetchval(
        "SELECT count(*) FROM memory_vectors v JOIN memory_items i ON i.id = v.item_id "
        "WHERE i.event_id = '$m5'"
    )
    assert count == 1
    # Editing a message memory never saw does nothing.
    await memory.indexer.update_event("ws-a", "$unknown", "text")
    await memory.indexer.flush()
    assert await memory.store.by_event("ws-a", "$unknown") == []


async def test_the_same_message_twice_is_stored_once(memory: Memory) -> None:
    await add_team(memory)
    await add_team(memory)
    await memory.indexer.add([message("ws-a", "$m1", "First"), message("ws-a", "$m1", "Second")])
    await memory.indexer.flush()
    stats = await memory.stats("ws-a")
    assert stats.by_kind == {"message": len(TEAM)}
    assert [i.text for i in await memory.store.by_event("ws-a", "$m1")] == ["Second"]


async def test_contact_details_are_redacted_before_storing_when_configured(
    open_memory: MemoryFactory,
) -> None:
    text = "Reach Bob at bob.builder@example.com or +49 30 1234567, ticket FW-811 from 2025-03-01."
    plain = await open_memory()
    await plain.indexer.add([message("ws-a", "$plain", text)])
    await plain.indexer.flush()
    assert (await plain.store.by_event("ws-a", "$plain"))[0].text == text
    await plain.close()

    redacting = await open_memory(memory={"redact_emails": True, "redact_phone_numbers": True})
    await redacting.indexer.add([message("ws-a", "$red", text)])
    await redacting.indexer.update_event("ws-a", "$plain", "new number: (555) 123-4567")
    fact = await redacting.remember("ws-a", "Alice's mail is alice@example.org", author="@a:hs")
    await redacting.indexer.flush()
    stored = (await redacting.store.by_event("ws-a", "$red"))[0].text
    assert stored == "Reach Bob at [email] or [phone], ticket FW-811 from 2025-03-01."
    assert (await redacting.store.by_event("ws-a", "$plain"))[0].text == "new number: [phone]"
    assert fact is not None and fact.text == "Alice's mail is [email]"
    assert not await redacting.search("ws-a", "example.com", mode="fulltext")


async def test_long_texts_are_split_and_found_once(open_memory: MemoryFactory) -> None:
    memory = await open_memory(memory={"chunk_words": 40})
    filler = " ".join(f"Paragraph {i} is about the quarterly roadmap." for i in range(30))
    document = filler + " The secret ingredient of the recipe is smoked paprika."
    # A long pasted message: an edit of its event replaces its pieces. (A shared file's pieces,
    # kind "document", are the file's: an edit of the file's message leaves them —
    # tests/integration/test_documents.py.)
    await memory.indexer.add(
        [
            MemoryInput(
                workspace_id="ws-a",
                text=document,
                kind="message",
                event_id="$doc",
                metadata={"title": "Recipes"},
            )
        ]
    )
    await memory.indexer.flush()
    pieces = await memory.store.by_event("ws-a", "$doc")
    assert len(pieces) > 3 and [p.chunk for p in pieces] == list(range(len(pieces)))
    assert all(p.metadata == {"title": "Recipes"} for p in pieces)
    hits = await memory.search("ws-a", "which spice goes into the dish?", k=5)
    assert hits[0].item.event_id == "$doc" and "paprika" in hits[0].item.text
    assert len([h for h in hits if h.item.event_id == "$doc"]) == 1  # one result per source
    # Deleting the source deletes every piece; an edit replaces them all.
    await memory.indexer.update_event("ws-a", "$doc", "Short now.")
    await memory.indexer.flush()
    assert [p.text for p in await memory.store.by_event("ws-a", "$doc")] == ["Short now."]


async def test_remember_forget_and_stats(memory: Memory) -> None:
    await add_team(memory)
    await memory.indexer.add(
        [
            MemoryInput(
                workspace_id="ws-a",
                text="Session summary: launch moved.",
                kind="summary",
                agent="helper",
                author="helper",
                event_id="$sum",
            ),
            MemoryInput(workspace_id="ws-b", text="Elsewhere.", event_id="$e"),
        ]
    )
    fact = await memory.remember(
        "ws-a",
        "Our Wi-Fi password is in the wiki.",
        author="@bob:hs",
        room_id="!r:hs",
        event_id="$remember",
        agent="helper",
    )
    assert fact is not None
    assert await memory.remember("ws-a", "   ", author="@bob:hs") is None
    await memory.indexer.flush()

    assert await memory.get("ws-a", fact.id) == fact
    assert await memory.get("ws-b", fact.id) is None  # IDs do not cross workspaces either
    hits = await memory.search("ws-a", "how do I get on the wireless network?", k=1)
    assert hits[0].item.id == fact.id and hits[0].item.author == "@bob:hs"

    stats = await memory.stats("ws-a")
    assert stats.by_kind == {"message": len(TEAM), "summary": 1, "fact": 1}
    assert stats.items == stats.pieces == len(TEAM) + 2
    assert stats.by_agent == {"helper": {"fact": 1, "summary": 1}}
    assert stats.unembedded == 0
    assert stats.model == "local/all-minilm-l6-v2" and stats.dims == 384
    assert stats.oldest == T0 and stats.newest is not None and stats.newest > T0

    assert not await memory.forget("ws-b", fact.id)
    assert await memory.forget("ws-a", fact.id)
    assert await memory.get("ws-a", fact.id) is None
    assert not await memory.forget("ws-a", fact.id)
    assert (await memory.stats("ws-a")).by_kind == {"message": len(TEAM), "summary": 1}
    assert (await memory.stats("ws-b")).by_kind == {"message": 1}


async def test_blank_and_odd_queries(memory: Memory) -> None:
    await add_team(memory)
    assert await memory.search("ws-a", "   ") == []
    assert await memory.search("ws-a", "the of and", mode="fulltext") == []  # only stopwords
    assert await memory.search("ws-a", "the of and", k=2)  # meaning still answers
    assert await memory.search("ws-a", "it's (a) 'quote' & | ! <-> :*", k=2) is not None
    assert await memory.search("ws-a", "launch", k=0) == []


async def test_the_vectors_table_follows_the_models_size(memory: Memory) -> None:
    pool: asyncpg.Pool = memory.store.pool
    type_ = await pool.fetchval(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'memory_vectors'::regclass AND attname = 'embedding'"
    )
    assert type_ == "vector(384)"
    indexes = await pool.fetchval(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'memory_vectors_embedding'"
    )
    assert "hnsw" in indexes and "vector_cosine_ops" in indexes


@pytest.mark.parametrize("batch", [1, 7, 64])
async def test_indexing_in_batches_stores_everything_in_order(
    open_memory: MemoryFactory, batch: int
) -> None:
    memory = await open_memory(memory={"index_batch_size": batch, "index_batch_wait": 0.01})
    await memory.indexer.add(
        message("ws-a", f"$n{i}", f"Note number {i} about topic {i % 5}.", minutes=i)
        for i in range(100)
    )
    await memory.indexer.update_event("ws-a", "$n3", "Note three was edited.")
    await memory.indexer.delete_event("ws-a", "$n4")
    await memory.indexer.flush()
    stats = await memory.stats("ws-a")
    assert stats.by_kind == {"message": 99} and stats.unembedded == 0
    assert (await memory.store.by_event("ws-a", "$n3"))[0].text == "Note three was edited."
    assert memory.indexer.pending == 0
