"""The pure parts of memory: redaction, splitting, the extractive summary, rank fusion, grouping
for retention, choosing the embedding model, and how a batch becomes ordered writes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from bot.core.config import Config, config_from_overrides
from bot.core.errors import ConfigError
from bot.memory import LocalEmbedder, MemoryItem, OpenAIEmbedder, build_embedder
from bot.memory.indexer import _Add, _Delete, _Update, _write_ops, to_new_items
from bot.memory.records import Candidate, DeleteEvent, Insert, MemoryInput, Replace
from bot.memory.service import (
    best_per_source,
    fuse,
    person_words,
    question_words,
    retention_groups,
    without_words,
)
from bot.memory.text import chunk_text, embedding_text, extractive_summary, redact

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def config(overrides: dict[str, Any]) -> Config:
    return config_from_overrides(
        {"appservice": {"as_token": "as-token", "hs_token": "hs-token"}, **overrides}
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail bob@example.com now", "mail [email] now"),
        ("bob.smith+tag@mail.example.co.uk.", "[email]."),
        ("Matrix IDs stay: @bob:example.org", "Matrix IDs stay: @bob:example.org"),
        ("call +49 30 1234567, thanks", "call [phone], thanks"),
        ("call +4930123456", "call [phone]"),
        ("office (555) 123-4567.", "office [phone]."),
        ("+1 (415) 555-0199", "[phone]"),
        ("cell 555-123-4567 or 555.123.4567", "cell [phone] or [phone]"),
        ("tel 030 1234 5678", "tel [phone]"),
        ("mobile 0171-2345678", "mobile [phone]"),
        ("release on 2024-03-15 at 14:30", "release on 2024-03-15 at 14:30"),
        ("meet 12.03.2024", "meet 12.03.2024"),
        ("server 192.168.100.200", "server 192.168.100.200"),
        ("v1.2.3 and 2.0.3 shipped", "v1.2.3 and 2.0.3 shipped"),
        ("costs 1,250,000 EUR or 6.99", "costs 1,250,000 EUR or 6.99"),
        ("ticket INC-2041, PR #4521, order 12345678", "ticket INC-2041, PR #4521, order 12345678"),
        ("between 10-20 users in 2023", "between 10-20 users in 2023"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text, emails=True, phone_numbers=True) == expected


def test_redact_toggles() -> None:
    text = "bob@example.com +49 30 1234567"
    assert redact(text, emails=False, phone_numbers=False) == text
    assert redact(text, emails=True, phone_numbers=False) == "[email] +49 30 1234567"
    assert redact(text, emails=False, phone_numbers=True) == "bob@example.com [phone]"


def test_redact_is_linear_on_hostile_input() -> None:
    """Input that makes a backtracking pattern quadratic or worse (a hang fails on the suite's
    timeout); what comes out is right too."""
    out = redact("1" * 50_000 + "a " + "1 " * 20_000 + "@" * 5000, emails=True, phone_numbers=True)
    assert out.startswith("1" * 50_000)  # far too long for a phone number: kept
    assert "[phone]" in out and "1 1" not in out  # the spaced digits are
    assert out.endswith("@" * 5000) and "[email]" not in out  # no address without a name


def test_chunk_text() -> None:
    assert chunk_text("  short text ", 10) == ["short text"]
    assert chunk_text("   ", 10) == []
    words = [f"w{i}" for i in range(25)]
    pieces = chunk_text(" ".join(words), 10, overlap=2)
    assert [len(p.split()) for p in pieces] == [10, 10, 9]
    assert pieces[1].split()[0] == "w8"  # overlaps the previous piece by 2 words
    assert pieces[-1].split()[-1] == "w24"
    assert chunk_text(" ".join(words[:20]), 10, overlap=0) == [
        " ".join(words[:10]),
        " ".join(words[10:20]),
    ]


def test_embedding_text() -> None:
    assert embedding_text("We ship on Friday.", "Launch planning") == (
        "Launch planning: We ship on Friday."
    )
    assert embedding_text("We ship on Friday.", None) == "We ship on Friday."
    assert embedding_text("We ship on Friday.", "Launch planning", "Dana") == (
        "Dana: We ship on Friday."
    )


def test_extractive_summary_keeps_the_informative_messages_in_order() -> None:
    messages = [
        ("@a:hs", "Morning!", T0),
        ("@b:hs", "The launch date moves to March 19 because of the payment review.", T0),
        ("@a:hs", "ok", T0 + timedelta(minutes=1)),
        ("@c:hs", "Journalists get the new launch date from Greta.", T0 + timedelta(minutes=2)),
        (None, "lol", T0 + timedelta(minutes=3)),
    ]
    summary = extractive_summary(messages)
    lines = summary.splitlines()
    assert lines[0] == "Summary of 5 messages from 2025-03-01 09:00 to 2025-03-01 09:03:"
    assert lines[1].startswith("- @b:hs: The launch date moves")
    assert lines[2].startswith("- @c:hs: Journalists")
    assert "ok" not in lines and not any("lol" in line for line in lines)
    short = extractive_summary(messages, max_chars=150)
    assert len(short) <= 150 and short.count("\n") == 1
    assert extractive_summary([]) == ""
    long = extractive_summary([("@a:hs", "word " * 500, T0)], line_chars=50)
    assert long.splitlines()[1].endswith("…") and len(long.splitlines()[1]) <= 60


def item(item_id: int, event: str | None = None, kind: str = "message") -> MemoryItem:
    return MemoryItem(
        id=item_id,
        workspace_id="ws",
        kind=kind,
        text=f"text {item_id}",  # type: ignore[arg-type]
        context=None,
        chunk=0,
        room_id="!r:hs",
        event_id=event,
        sender=None,
        author=None,
        agent=None,
        created_at=T0,
        updated_at=T0,
        metadata={},
        source_event_ids=(),
    )


def test_fuse_is_reciprocal_rank_fusion() -> None:
    candidates = [
        Candidate(item(1), vector_rank=1, distance=0.1, text_rank=None, text_score=None),
        Candidate(item(2), vector_rank=2, distance=0.2, text_rank=1, text_score=0.5),
        Candidate(item(3), vector_rank=None, distance=None, text_rank=2, text_score=0.4),
    ]
    hits = fuse(candidates, rrf_k=60, vector_weight=1.0, text_weight=1.0)
    assert [h.item.id for h in hits] == [2, 1, 3]
    assert hits[0].score == pytest.approx(1 / 62 + 1 / 61)
    assert hits[1].score == pytest.approx(1 / 61)
    assert (hits[0].vector_rank, hits[0].text_rank, hits[0].distance) == (2, 1, 0.2)
    words_only = fuse(candidates, rrf_k=60, vector_weight=0.0, text_weight=1.0)
    assert [h.item.id for h in words_only][:2] == [2, 3]
    # Ties go to the newer item.
    tied = [Candidate(item(i), 1, 0.1, None, None) for i in (5, 9, 7)]
    assert [h.item.id for h in fuse(tied, rrf_k=1, vector_weight=1, text_weight=1)] == [9, 7, 5]


@pytest.mark.parametrize(
    ("user_id", "words"),
    [
        ("@evan:hs", {"evan"}),
        ("@maria.lopez:example.org", {"maria", "lopez"}),
        ("@alice_6d16f1:localhost", {"alice"}),
        ("@x:hs", set()),
        (None, set()),
    ],
)
def test_person_words(user_id: str | None, words: set[str]) -> None:
    assert person_words(user_id) == words


def test_person_words_with_a_display_name() -> None:
    assert person_words("@d.schmidt:corp", "Dana Schmidt 🚀") == {"dana", "schmidt"}
    assert person_words(None, "Dana") == set()


def test_the_speaker_a_question_names_comes_first() -> None:
    maria = replace(item(1), sender="@maria:hs")
    evan = replace(item(2), sender="@evan:hs")
    candidates = [Candidate(maria, 1, 0.1, 1, 0.5), Candidate(evan, 2, 0.2, 2, 0.4)]
    named = question_words("What car does Evan’s brother say Evan drives?")
    assert "evan" in named
    hits = fuse(
        candidates, rrf_k=60, vector_weight=1, text_weight=1, speaker_weight=2, named=named
    )
    assert [h.item.id for h in hits] == [2, 1]
    # Without the speaker's weight, or a question that names nobody: ranks alone decide.
    plain = fuse(candidates, rrf_k=60, vector_weight=1, text_weight=1, named=named)
    assert [h.item.id for h in plain] == [1, 2]
    # Known by display name only: @u123 is "Evan Wright".
    anonymous = replace(item(3), sender="@u123:hs")
    named_only = [Candidate(maria, 1, 0.1, 1, 0.5), Candidate(anonymous, 2, 0.2, 2, 0.4)]
    hits = fuse(
        named_only,
        rrf_k=60,
        vector_weight=1,
        text_weight=1,
        speaker_weight=2,
        named=named,
        names={"@u123:hs": "Evan Wright"},
    )
    assert [h.item.id for h in hits] == [3, 1]
    assert question_words("What did Will say about May's trip?") >= {"will", "may"}
    assert question_words("when will we launch?") == {"launch"}
    nobody = question_words("what car is that")
    hits = fuse(
        candidates, rrf_k=60, vector_weight=1, text_weight=1, speaker_weight=2, named=nobody
    )
    assert [h.item.id for h in hits] == [1, 2]


def test_a_second_search_adds_its_ranks_and_keeps_the_best() -> None:
    first = [
        Candidate(item(1), vector_rank=1, distance=0.3, text_rank=1, text_score=0.9),
        Candidate(item(2), vector_rank=2, distance=0.4, text_rank=None, text_score=None),
    ]
    # Without the name, item 2 (the person's own "I drive a Fiat") ranks first on both halves.
    second = [
        Candidate(item(2), vector_rank=1, distance=0.1, text_rank=1, text_score=0.8),
        Candidate(item(3), vector_rank=2, distance=0.2, text_rank=None, text_score=None),
    ]
    hits = fuse(first, rrf_k=60, vector_weight=1, text_weight=1, also=second)
    assert [h.item.id for h in hits] == [2, 1, 3]
    assert hits[0].score == pytest.approx(1 / 62 + 1 / 61 + 1 / 61)
    assert (hits[0].vector_rank, hits[0].text_rank, hits[0].distance) == (1, 1, 0.1)
    assert hits[1].score == pytest.approx(2 / 61)
    # Nothing second: the first search alone, unchanged.
    assert fuse(first, rrf_k=60, vector_weight=1, text_weight=1, also=()) == fuse(
        first, rrf_k=60, vector_weight=1, text_weight=1
    )


def test_the_people_a_question_names_are_taken_out_of_it() -> None:
    people = frozenset({"evan", "dana"})
    assert without_words("What car does Evan drive?", people) == "What car does drive?"
    assert without_words("Where is EVAN’s dog and Dana's cat?", people) == "Where is dog and cat?"
    # Whole words only, nothing to take out: the same question.
    assert without_words("Does Evangeline drive?", people) == "Does Evangeline drive?"
    assert without_words("What car?", frozenset()) == "What car?"
    # Names that are regular-expression text are taken literally.
    assert without_words("Is a.b here or axb?", frozenset({"a.b"})) == "Is here or axb?"


def test_best_per_source_keeps_one_piece_per_event() -> None:
    pieces = [
        Candidate(item(1, "$doc", "document"), 1, 0.1, None, None),
        Candidate(item(2, "$doc", "document"), 2, 0.2, None, None),
        Candidate(item(3, "$doc", "fact"), 3, 0.3, None, None),
        Candidate(item(4), 4, 0.4, None, None),
        Candidate(item(5), 5, 0.5, None, None),
    ]
    hits = fuse(pieces, rrf_k=60, vector_weight=1, text_weight=1)
    assert [h.item.id for h in best_per_source(hits, 10)] == [1, 3, 4, 5]
    assert [h.item.id for h in best_per_source(hits, 2)] == [1, 3]


def test_best_per_source_leaves_out_what_a_better_hit_of_the_same_person_says() -> None:
    said = [replace(item(i), text=t, sender=sender) for i, (sender, t) in enumerate(SAID, start=1)]
    hits = fuse(
        [Candidate(m, m.id, 0.1, None, None) for m in said],
        rrf_k=60,
        vector_weight=1,
        text_weight=1,
    )
    assert [h.item.id for h in best_per_source(hits, 10)] == [1, 3, 4, 5, 6, 8, 9]
    assert [h.item.id for h in best_per_source(hits, 3)] == [1, 3, 4]


SAID = (
    ("@a:hs", "Do you still drive that old car? I'm so tired after the gym."),
    ("@a:hs", "do you  still drive that OLD car"),  # within the first: nothing new
    ("@a:hs", "Did you still drive?"),  # other words in between: kept
    ("@a:hs", "The budget is 40k."),
    ("@a:hs", "The budget is 50k."),  # numbers count
    ("@b:hs", "Do you still drive that old car?"),  # someone else's: kept
    ("@b:hs", "Do you still drive that old car"),
    ("@a:hs", "The budget is 40k or 50k, not more."),  # more than what came before: kept
    ("@a:hs", "rive that old"),  # part of a word is not the word: kept
    ("@a:hs", "car? I'm"),  # whole words of a better hit, punctuation aside: left out
)


def test_retention_groups_by_room_day_and_size() -> None:
    def at(item_id: int, room: str, hours: float) -> MemoryItem:
        return replace(item(item_id), room_id=room, created_at=T0 + timedelta(hours=hours))

    messages = []
    for i in range(5):
        messages.append(at(i, "!a", i * 0.1))
    messages.append(at(10, "!b", 0.5))
    messages.append(at(11, "!a", 20))  # the next day (UTC)
    groups = retention_groups(sorted(messages, key=lambda m: m.created_at), max_size=3)
    assert [[m.id for m in g] for g in groups] == [[0, 1, 2], [3, 4], [10], [11]]


def test_to_new_items_redacts_and_splits() -> None:
    settings = config({"memory": {"redact_emails": True, "chunk_words": 20}}).memory
    text = "Write to team@example.com. " + "word " * 30
    rows = to_new_items(
        MemoryInput(workspace_id="ws", text=text, event_id="$e", context="Topic"), settings
    )
    assert [r.chunk for r in rows] == [0, 1]
    assert rows[0].text.startswith("Write to [email].")
    assert all(r.context == "Topic" and r.event_id == "$e" for r in rows)
    assert rows[0].created_at == rows[1].created_at  # now, once
    assert to_new_items(MemoryInput(workspace_id="ws", text="  "), settings) == ()


def test_a_batch_becomes_ordered_writes_with_its_vectors() -> None:
    settings = config({}).memory
    a = MemoryInput(workspace_id="ws", text="one", event_id="$1")
    b = MemoryInput(workspace_id="ws", text="two", event_id="$2")
    c = MemoryInput(workspace_id="ws", text="three", event_id="$3")
    batch: list[Any] = [
        _Add(a),
        _Add(b),
        _Update("ws", "$1", "one edited", T0),
        _Delete("ws", "$2"),
        _Add(c),
        _Update("ws", "$3", "", T0),  # edited to nothing
    ]
    pieces: list[Any] = [
        to_new_items(a, settings),
        to_new_items(b, settings),
        ["one edited"],
        None,
        to_new_items(c, settings),
        [],
    ]
    vectors = np.arange(4 * 2, dtype=np.float32).reshape(4, 2)
    ops = _write_ops(batch, pieces, vectors)
    assert [type(op) for op in ops] == [Insert, Replace, DeleteEvent, Insert, DeleteEvent]
    first, replace, _, second, emptied = ops
    assert isinstance(first, Insert) and [i.text for i in first.items] == ["one", "two"]
    assert first.vectors is not None and first.vectors.tolist() == [[0, 1], [2, 3]]
    assert isinstance(replace, Replace) and replace.texts == ("one edited",)
    assert replace.vectors is not None and replace.vectors.tolist() == [[4, 5]]
    assert isinstance(second, Insert) and second.vectors is not None
    assert second.vectors.tolist() == [[6, 7]]
    assert isinstance(emptied, DeleteEvent) and emptied.event_id == "$3"
    # Without vectors (the model failed), the same writes, to be embedded later.
    assert [getattr(op, "vectors", None) for op in _write_ops(batch, pieces, None)] == [None] * 5


def test_the_embedding_model_is_chosen_by_reference() -> None:
    local = build_embedder(config({}))
    assert isinstance(local, LocalEmbedder) and local.model == "local/all-minilm-l6-v2"

    providers = {
        "openai": {"kind": "openai", "api_key": "sk-test"},
        "claude": {"kind": "anthropic", "api_key": "x"},
    }
    openai = build_embedder(
        config(
            {
                "llm": {"providers": providers},
                "embeddings": {"model": "openai/text-embedding-3-small"},
            }
        )
    )
    assert isinstance(openai, OpenAIEmbedder) and openai.model == "openai/text-embedding-3-small"
    # The provider named "local" (Ollama in the example) serves any other local/ model.
    ollama = build_embedder(config({"embeddings": {"model": "local/nomic-embed"}}))
    assert isinstance(ollama, OpenAIEmbedder)

    for overrides, message in [
        ({"embeddings": {"model": "nowhere/model"}}, "names no provider 'nowhere'"),
        (
            {"llm": {"providers": providers}, "embeddings": {"model": "claude/any"}},
            "kind anthropic, which has no embeddings endpoint",
        ),
        ({"embeddings": {"dimensions": 128}}, "only OpenAI-compatible models"),
    ]:
        with pytest.raises(ConfigError, match=message) as failed:
            build_embedder(config(overrides))
        assert failed.value.key in ("embeddings.model", "embeddings.dimensions")


async def test_known_openai_sizes_need_no_call() -> None:
    embedder = OpenAIEmbedder("openai/text-embedding-3-large", base_url="", api_key="sk")
    try:
        assert await embedder.dimensions() == 3072
    finally:
        await embedder.aclose()


def test_memory_config_defaults_and_validation() -> None:
    loaded = config({})
    assert loaded.memory.retention_days == 0 and loaded.memory.retention_mode == "compact"
    assert loaded.embeddings.dimensions == 0 and loaded.embeddings.timeout == 30
    with pytest.raises(ConfigError, match="memory.retention_mode"):
        config({"memory": {"retention_mode": "shred"}})
    with pytest.raises(ConfigError, match="memory.fulltext_min_match"):
        config({"memory": {"fulltext_min_match": 2}})
