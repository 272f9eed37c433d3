"""Fixtures of the memory tests: the real local embedding model (loaded once for the session),
a pool on this test's database, Memory built from a config, and the fake embeddings endpoint."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from bot.core import db
from bot.core.config import Config, config_from_overrides
from bot.memory import LocalEmbedder, Memory
from tests.fakes.embeddings_server import FakeEmbeddings

TOKENS = {"as_token": "test-as-token", "hs_token": "test-hs-token"}


@pytest.fixture(scope="session")
async def local_embedder() -> AsyncIterator[LocalEmbedder]:
    """all-MiniLM-L6-v2, loaded once, offline."""
    saved = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    embedder = LocalEmbedder("all-minilm-l6-v2")
    await embedder.load()
    yield embedder
    await embedder.aclose()
    if saved is None:
        os.environ.pop("HF_HUB_OFFLINE", None)
    else:
        os.environ["HF_HUB_OFFLINE"] = saved


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.connect(database_url, min_size=1, max_size=5)
    yield pool
    await pool.close()


def memory_config(database_url: str = "embedded", **sections: dict[str, Any]) -> Config:
    overrides: dict[str, Any] = {"appservice": dict(TOKENS), "database": {"url": database_url}}
    for section, values in sections.items():
        overrides.setdefault(section, {}).update(values)
    return config_from_overrides(overrides)


MemoryFactory = Callable[..., Awaitable[Memory]]


@pytest.fixture
async def open_memory(
    pool: asyncpg.Pool, database_url: str, local_embedder: LocalEmbedder
) -> AsyncIterator[MemoryFactory]:
    """Open Memory on this test's database: keyword arguments are config sections (memory=,
    embeddings=, llm=); with the default embeddings it shares the session's local model."""
    opened: list[Memory] = []

    async def open_(**sections: dict[str, Any]) -> Memory:
        config = memory_config(database_url, **sections)
        shared = local_embedder if config.embeddings.model == local_embedder.model else None
        memory = await Memory.open(config, pool, embedder=shared)
        opened.append(memory)
        return memory

    yield open_
    for memory in opened:
        await memory.close()


@pytest.fixture
async def memory(open_memory: MemoryFactory) -> Memory:
    return await open_memory()


@pytest.fixture
async def fake_embeddings() -> AsyncIterator[FakeEmbeddings]:
    async with FakeEmbeddings(dims=64) as server:
        yield server


def fake_model_sections(server: FakeEmbeddings, **embeddings: Any) -> dict[str, dict[str, Any]]:
    """Config sections that make a provider `fake` of the fake server the embedding model."""
    return {
        "llm": {"providers": {"fake": {"kind": "openai", "base_url": server.base_url}}},
        "embeddings": {"model": "fake/fake-embed", "timeout": 2, **embeddings},
    }
