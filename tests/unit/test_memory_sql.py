"""The memory's SQL, built by pure functions (bot/memory/sql.py) and its one definition of an
item's columns (bot/memory/records.py): checked without a database. (That the columns are the
table's is checked against the real schema in tests/integration/memory/test_memory.py.)"""

from __future__ import annotations

import re
from dataclasses import fields
from datetime import UTC, datetime

from bot.memory.records import (
    ITEM_COLUMNS,
    ITEM_FIELDS,
    NEW_ITEM_FIELDS,
    MemoryItem,
    NewItem,
    item_values,
    stored_item,
)
from bot.memory.sql import (
    NEXT_VECTORS,
    VECTORS,
    hnsw_index_sql,
    insert_items_sql,
    own_index_name,
    query_words,
    vector_settings,
    vector_sql,
    vector_table_sql,
    words_query,
    words_sql,
)


def placeholders(sql: str) -> set[int]:
    return {int(n) for n in re.findall(r"\$(\d+)", sql)}


def test_an_items_columns_are_defined_once_by_its_record() -> None:
    assert ITEM_FIELDS == tuple(f.name for f in fields(MemoryItem))
    assert set(ITEM_FIELDS) - set(NEW_ITEM_FIELDS) == {"id", "updated_at"}
    assert ITEM_COLUMNS.split(", ") == [f"i.{name}" for name in ITEM_FIELDS]
    insert = insert_items_sql()
    assert placeholders(insert) == set(range(1, len(ITEM_FIELDS) + 1))
    assert insert.startswith(f"INSERT INTO memory_items ({', '.join(ITEM_FIELDS)})")


def test_a_stored_item_is_written_in_the_columns_order() -> None:
    now = datetime(2026, 12, 4, tzinfo=UTC)
    new = NewItem(
        workspace_id="w",
        kind="message",
        text="hi",
        context=None,
        chunk=0,
        room_id="!r:hs",
        event_id="$e",
        sender="@a:hs",
        author=None,
        agent=None,
        created_at=now,
        metadata={"k": 1},
        source_event_ids=("$s",),
    )
    item = stored_item(new, 7, now)
    values = dict(zip(ITEM_FIELDS, item_values(item), strict=True))
    assert values["id"] == 7 and values["updated_at"] == now and values["text"] == "hi"
    assert values["source_event_ids"] == ["$s"] and values["metadata"] == {"k": 1}


def test_the_vector_queries_take_the_parameters_they_say() -> None:
    for exact in (True, False):
        assert placeholders(vector_sql(exact=exact, kinds=False)) == {1, 2, 3}
        assert placeholders(vector_sql(exact=exact, kinds=True)) == {1, 2, 3, 4}
    # Exact: sorted by an expression the HNSW index cannot serve, through the workspace's rows.
    assert "(embedding <=> $2) + 0" in vector_sql(exact=True, kinds=False)
    assert "+ 0" not in vector_sql(exact=False, kinds=False)
    assert vector_settings(True, ef_search=400, candidates=40) == "SET LOCAL enable_seqscan = off"
    hnsw = vector_settings(False, ef_search=100, candidates=400)
    assert "hnsw.ef_search = 400" in hnsw and "iterative_scan = relaxed_order" in hnsw


def test_the_words_query_takes_the_parameters_it_says() -> None:
    assert placeholders(words_sql(kinds=False)) == set(range(1, 9))
    assert placeholders(words_sql(kinds=True)) == set(range(1, 10))


def test_vector_tables_and_their_indexes() -> None:
    live = vector_table_sql(VECTORS, 384, foreign_key=True)
    assert "vector(384)" in live and "REFERENCES memory_items (id) ON DELETE CASCADE" in live
    assert "REFERENCES" not in vector_table_sql(NEXT_VECTORS, 768, foreign_key=False)
    assert "ef_construction = 128" in hnsw_index_sql(VECTORS)


def test_a_workspaces_own_index_name_fits_and_is_its_own() -> None:
    long_id = "!" + "x" * 300 + ":hs"
    names = {own_index_name(w) for w in (long_id, "!a:hs", "!b:hs", "!o'mid\\room:hs")}
    assert len(names) == 4
    assert all(len(n) <= 63 and re.fullmatch(r"[a-z0-9_]+", n) for n in names)
    assert own_index_name("!a:hs") == own_index_name("!a:hs")


def test_a_question_keeps_its_longest_words() -> None:
    assert query_words(["b", "aa", "b", "ccc"]) == ["aa", "b", "ccc"]
    many = [f"w{i:02d}" for i in range(20)] + ["longestword"]
    kept = query_words(many)
    assert len(kept) == 10 and "longestword" in kept and kept == sorted(kept)


def test_words_query_needs_a_share_of_the_words_and_ranks_by_any() -> None:
    assert words_query(["releas", "date", "decid"], 0.5) == (
        "('date' & 'decid') | ('date' & 'releas') | ('decid' & 'releas')",
        "'date' | 'decid' | 'releas'",
    )
    assert words_query(["releas", "date"], 0.0) == ("'date' | 'releas'",) * 2
    assert words_query(["releas", "date"], 1.0) == ("'date' & 'releas'", "'date' | 'releas'")
    assert words_query(["solo"], 0.5) == ("'solo'", "'solo'")
    assert words_query([], 0.5) is None
    # Quotes and backslashes are escaped the way tsquery input wants them.
    assert words_query(["it's", "a\\b"], 0.0) == ("'a\\\\b' | 'it''s'",) * 2
    # A long question keeps its longest words, so the query stays bounded (C(10, 5) groups).
    many = [f"w{i:02d}" for i in range(20)] + ["longestword"]
    match, rank = words_query(many, 0.5)  # type: ignore[misc]
    assert match.count("(") == 252 and "'longestword'" in rank and rank.count("|") == 9
