"""Workspace memory: embeddings, the pgvector + full-text store, the indexer, the Memory service.

See bot.memory.service for the API the rest of Doryo uses, and bot.memory.store for the schema.
"""

from __future__ import annotations

from bot.memory.embeddings import Embedder, LocalEmbedder, OpenAIEmbedder, build_embedder
from bot.memory.indexer import Indexer
from bot.memory.indexes import OwnIndexes
from bot.memory.records import KINDS, MemoryInput, MemoryItem, MemoryKind, MemoryStats
from bot.memory.reindex import ReindexResult, reindex
from bot.memory.service import (
    Memory,
    MemoryHit,
    PruneResult,
    SearchMode,
    Summarizer,
    extractive_summarizer,
)
from bot.memory.store import MemoryStore

__all__ = [
    "KINDS",
    "Embedder",
    "Indexer",
    "LocalEmbedder",
    "Memory",
    "MemoryHit",
    "MemoryInput",
    "MemoryItem",
    "MemoryKind",
    "MemoryStats",
    "MemoryStore",
    "OpenAIEmbedder",
    "OwnIndexes",
    "PruneResult",
    "ReindexResult",
    "SearchMode",
    "Summarizer",
    "build_embedder",
    "extractive_summarizer",
    "reindex",
]
