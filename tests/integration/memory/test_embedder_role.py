"""`doryo run --role embedder`: the built-in model served to processes that run without it.
Its vectors are the model's own (a worker and a process with the model write one memory), and
it answers only the deployment's processes, within bounds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import numpy as np
import pytest

from bot.embedding_server import MAX_TEXTS, EmbeddingServer
from bot.memory import Memory, MemoryInput
from bot.memory.embeddings import LocalEmbedder, OpenAIEmbedder, embedder_token
from synapse_dev.server import free_port
from tests.integration.memory.conftest import memory_config

TEXTS = ["The launch moved to March 19.", "Dinner on Wednesday is booked for eight people."]


@pytest.fixture
async def embedder_url(local_embedder: LocalEmbedder) -> AsyncIterator[str]:
    server = EmbeddingServer(memory_config(), embedder=local_embedder)
    port = free_port()
    await server.start("127.0.0.1", port)
    yield f"http://127.0.0.1:{port}"
    await server.stop()


async def test_a_process_without_the_model_gets_the_models_vectors_from_the_embedder(
    embedder_url: str, pool: asyncpg.Pool, database_url: str, local_embedder: LocalEmbedder
) -> None:
    config = memory_config(database_url, embeddings={"local_url": embedder_url})
    memory = await Memory.open(config, pool)  # builds its embedder from the config
    try:
        assert isinstance(memory.embedder, OpenAIEmbedder)  # no model in this process
        assert memory.embedder.model == local_embedder.model  # the same vectors' table
        for interactive in (True, False):
            remote = await memory.embedder.embed(TEXTS, interactive=interactive)
            here = await local_embedder.embed(TEXTS, interactive=interactive)
            assert remote.shape == here.shape == (2, 384)
            assert np.allclose(remote, here, atol=1e-5)
        await memory.add_now(
            [
                MemoryInput(workspace_id="ws", text=t, event_id=f"$e{n}")
                for n, t in enumerate(TEXTS)
            ]
        )
        hits = await memory.search("ws", "when is the release?", k=1, mode="vector")
        assert hits[0].item.text == TEXTS[0]
    finally:
        await memory.close()
    # A process with the model in it reads the same memory, no reindex.
    with_model = await Memory.open(config.model_copy(), pool, embedder=local_embedder)
    try:
        hits = await with_model.search("ws", "when is the release?", k=1, mode="vector")
        assert hits[0].item.text == TEXTS[0]
    finally:
        await with_model.close()


@pytest.mark.parametrize(
    ("token", "body", "status"),
    [
        (None, {"model": "all-minilm-l6-v2", "input": ["x"]}, 401),
        ("wrong", {"model": "all-minilm-l6-v2", "input": ["x"]}, 401),
        ("ours", {"model": "text-embedding-3-small", "input": ["x"]}, 404),
        ("ours", {"model": "all-minilm-l6-v2", "input": []}, 400),
        ("ours", {"model": "all-minilm-l6-v2", "input": [1, 2]}, 400),
        ("ours", {"model": "all-minilm-l6-v2", "input": ["x"] * (MAX_TEXTS + 1)}, 400),
        ("ours", {"model": "all-minilm-l6-v2", "input": ["x" * 100_001]}, 400),
        ("ours", {"model": "all-minilm-l6-v2", "input": ["x"], "doryo_lane": "vip"}, 400),
        ("ours", ["not", "an", "object"], 400),
        ("ours", {"model": "all-minilm-l6-v2", "input": "one text"}, 200),
    ],
)
async def test_the_embedder_answers_only_the_deployment_within_bounds(
    embedder_url: str, token: str | None, body: Any, status: int
) -> None:
    headers = {}
    if token is not None:
        value = embedder_token(memory_config()) if token == "ours" else token
        headers["Authorization"] = f"Bearer {value}"
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{embedder_url}/v1/embeddings", json=body, headers=headers) as response,
    ):
        assert response.status == status
        answer = await response.json()
    if status == 200:
        assert len(answer["data"]) == 1 and len(answer["data"][0]["embedding"]) == 384
    else:
        assert answer["error"]["message"]
