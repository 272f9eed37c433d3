"""What the memory stores and hands out: inputs, stored items, search candidates, the writes
applied in one transaction, and the one definition of an item's columns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Literal, get_args

import asyncpg

from bot.core.errors import EmbeddingModelMismatch
from bot.memory.embeddings import Vectors

MemoryKind = Literal["message", "summary", "fact", "document"]
KINDS: tuple[MemoryKind, ...] = get_args(MemoryKind)


@dataclass(frozen=True, slots=True)
class MemoryInput:
    """Something to remember, as the history (or a command) hands it to the indexer."""

    workspace_id: str
    text: str
    kind: MemoryKind = "message"
    context: str | None = None
    """What the text is part of (the session's topic, a document's title): embedded with it."""
    room_id: str | None = None
    event_id: str | None = None
    """The source event: unique per workspace for messages; redacting it deletes the item."""
    sender: str | None = None
    author: str | None = None
    agent: str | None = None
    created_at: datetime | None = None
    """When it was said (the event's origin_server_ts); default: now."""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    source_event_ids: tuple[str, ...] = ()
    """For derived items (summaries): the events they were made from."""


@dataclass(frozen=True, slots=True)
class NewItem:
    """One row to write: an input (redacted, split) piece with its final text."""

    workspace_id: str
    kind: MemoryKind
    text: str
    context: str | None
    chunk: int
    room_id: str | None
    event_id: str | None
    sender: str | None
    author: str | None
    agent: str | None
    created_at: datetime
    metadata: Mapping[str, Any]
    source_event_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryItem(NewItem):
    """A stored item: what was written, with the ID and the time the store gave it. Its fields
    are the memory_items table's columns (ITEM_FIELDS), defined here once."""

    id: int
    updated_at: datetime

    @property
    def place(self) -> str | None:
        """A document's piece: the file's name and where in it ("spec.pdf, p. 4")."""
        if self.kind != "document":
            return None
        name = self.metadata.get("document")
        where = self.metadata.get("place")
        if not isinstance(name, str):
            return self.context
        return f"{name}, {where}" if isinstance(where, str) and where else name


@dataclass(frozen=True, slots=True)
class Candidate:
    """An item one of the retrievers proposed, with its rank there (1 = best)."""

    item: MemoryItem
    vector_rank: int | None
    distance: float | None
    text_rank: int | None
    text_score: float | None


@dataclass(frozen=True, slots=True)
class ModelRecord:
    model: str
    dims: int


@dataclass(frozen=True, slots=True)
class MemoryStats:
    workspace_id: str
    items: int
    """Remembered items (a long text split in pieces counts once)."""
    pieces: int
    by_kind: Mapping[str, int]
    by_agent: Mapping[str, Mapping[str, int]]
    """agent → kind → items, for items recorded with an agent."""
    unembedded: int
    """Pieces waiting for a vector (found by words only until then)."""
    oldest: datetime | None
    newest: datetime | None
    model: str | None
    dims: int | None


# Writes, applied in order in one transaction by MemoryStore.apply.
@dataclass(frozen=True, slots=True)
class Insert:
    """Store items, replacing the pieces of the same workspace, event and kind."""

    items: tuple[NewItem, ...]
    vectors: Vectors | None
    """One row per item, or None: store them to be embedded later."""


@dataclass(frozen=True, slots=True)
class Replace:
    """An edit: the event's items get this text (as pieces), keeping what else they had. A
    document's pieces are the file's, not its message's: an edit of the message (its
    caption) leaves them."""

    workspace_id: str
    event_id: str
    texts: tuple[str, ...]
    vectors: Vectors | None
    edited_at: datetime


@dataclass(frozen=True, slots=True)
class DeleteEvent:
    """A redaction: delete the event's items, and items derived from it."""

    workspace_id: str
    event_id: str


@dataclass(frozen=True, slots=True)
class DeleteItems:
    """Delete items by ID, with the other pieces of their source event."""

    workspace_id: str
    ids: tuple[int, ...]


WriteOp = Insert | Replace | DeleteEvent | DeleteItems


@dataclass(slots=True)
class ApplyResult:
    inserted: list[MemoryItem] = field(default_factory=list)
    deleted: int = 0
    replaced: int = 0
    unembedded: int = 0
    mismatch: EmbeddingModelMismatch | None = None


ITEM_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(MemoryItem))
"""A memory_items row's columns (MemoryItem's fields): what every read selects."""
ITEM_COLUMNS = ", ".join(f"i.{name}" for name in ITEM_FIELDS)
"""ITEM_FIELDS for a query that calls memory_items `i`."""
NEW_ITEM_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(NewItem))
"""What a write gives (an item's columns but its id and updated_at, which the store sets)."""


def item_from_row(row: asyncpg.Record) -> MemoryItem:
    values = {name: row[name] for name in ITEM_FIELDS}
    values["source_event_ids"] = tuple(values["source_event_ids"])
    return MemoryItem(**values)


def stored_item(item: NewItem, item_id: int, updated_at: datetime) -> MemoryItem:
    """The item a write stored, as a read would return it."""
    values = {name: getattr(item, name) for name in NEW_ITEM_FIELDS}
    values["metadata"] = dict(item.metadata)
    return MemoryItem(id=item_id, updated_at=updated_at, **values)


def item_values(item: MemoryItem) -> tuple[Any, ...]:
    """An item's values for an INSERT of ITEM_FIELDS, as asyncpg takes them."""
    values = {name: getattr(item, name) for name in ITEM_FIELDS}
    values["metadata"] = dict(item.metadata)
    values["source_event_ids"] = list(item.source_event_ids)
    return tuple(values[name] for name in ITEM_FIELDS)
