"""Embedding models: the OpenAI-compatible endpoint (a fake at the wire), the provider failing,
changing the model (never mixed: refused until reindex) and `doryo reindex`."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

import asyncpg
import numpy as np
import pytest
from ruamel.yaml import YAML

from bot import embedding_worker
from bot.core.errors import EmbeddingError, EmbeddingModelMismatch
from bot.memory import Memory, MemoryInput, build_embedder
from bot.memory.embeddings import LocalEmbedder, OpenAIEmbedder
from bot.memory.reindex import ReindexStore
from tests.fakes.embeddings_server import FakeEmbeddings
from tests.integration.memory.conftest import (
    TOKENS,
    MemoryFactory,
    fake_model_sections,
    memory_config,
)

TEXTS = [
    ("$1", "The launch moved to March 19 because the payment provider needs more time."),
    ("$2", "Dinner on Wednesday is booked for eight people at eight."),
    ("$3", "Backups are kept for thirty days in the bucket."),
]


def inputs(workspace: str = "ws") -> list[MemoryInput]:
    return [MemoryInput(workspace_id=workspace, text=t, event_id=e) for e, t in TEXTS]


async def vector_type(memory: Memory) -> str:
    return str(
        await memory.store.pool.fetchval(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'memory_vectors'::regclass AND attname = 'embedding'"
        )
    )


async def test_openai_compatible_embeddings(fake_embeddings: FakeEmbeddings) -> None:
    embedder = OpenAIEmbedder(
        "fake/fake-embed", base_url=fake_embeddings.base_url, api_key="k", batch_size=2
    )
    try:
        assert await embedder.dimensions() == 64  # unknown model: asked once
        vectors = await embedder.embed(["one text", "two texts", "three", "four"])
        assert vectors.shape == (4, 64) and vectors.dtype == np.float32
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
        assert len(fake_embeddings.requests) == 1 + 2  # the probe, then batches of 2
        assert fake_embeddings.requests[-1]["model"] == "fake-embed"
    finally:
        await embedder.aclose()

    sized = OpenAIEmbedder(
        "fake/fake-embed", base_url=fake_embeddings.base_url, api_key="", dimensions=32
    )
    try:
        assert sized.model == "fake/fake-embed@32"  # two sizes are two models
        assert (await sized.embed(["x"])).shape == (1, 32)
        assert fake_embeddings.requests[-1]["dimensions"] == 32
    finally:
        await sized.aclose()


async def test_provider_failures_are_embedding_errors(fake_embeddings: FakeEmbeddings) -> None:
    embedder = OpenAIEmbedder(
        "fake/fake-embed", base_url=fake_embeddings.base_url, api_key="", timeout=0.5
    )
    try:
        fake_embeddings.fail_status = 503
        with pytest.raises(EmbeddingError, match="HTTP 503") as failed:
            await embedder.embed(["x"])
        assert failed.value.retryable
        fake_embeddings.fail_status = 401
        with pytest.raises(EmbeddingError, match="HTTP 401") as failed:
            await embedder.embed(["x"])
        assert not failed.value.retryable
        fake_embeddings.fail_status = None
        fake_embeddings.delay = 5
        started = time.monotonic()
        with pytest.raises(EmbeddingError, match="timed out"):
            await embedder.embed(["x"])
        assert time.monotonic() - started < 2.5
    finally:
        await embedder.aclose()
    fake_embeddings.delay = 0
    nowhere = OpenAIEmbedder("fake/m", base_url="http://127.0.0.1:9/v1", api_key="", timeout=1)
    try:
        with pytest.raises(EmbeddingError, match="not reachable"):
            await nowhere.embed(["x"])
    finally:
        await nowhere.aclose()


async def test_provider_down_stores_by_words_and_embeds_later(
    open_memory: MemoryFactory, fake_embeddings: FakeEmbeddings
) -> None:
    memory = await open_memory(**fake_model_sections(fake_embeddings))
    assert await vector_type(memory) == "vector(64)"
    fake_embeddings.fail_status = 500
    await memory.indexer.add(inputs())
    await memory.indexer.flush()
    assert (await memory.stats("ws")).unembedded == 3
    # The hybrid search answers by words alone; meaning alone cannot.
    hits = await memory.search("ws", "payment provider", k=2)
    assert hits[0].item.event_id == "$1" and hits[0].vector_rank is None
    with pytest.raises(EmbeddingError):
        await memory.search("ws", "payment provider", mode="vector")
    fact = await memory.remember("ws", "Wi-Fi password is in the wiki", author="@a:hs")
    assert fact is not None and (await memory.stats("ws")).unembedded == 4

    # Back up: the idle indexer embeds what waits, by itself.
    fake_embeddings.fail_status = None
    for _ in range(100):
        if not (await memory.stats("ws")).unembedded:
            break
        await asyncio.sleep(0.2)
    else:
        pytest.fail("the items stored without vectors were never embedded")
    hits = await memory.search("ws", "payment provider", k=1, mode="vector")
    assert hits[0].item.event_id == "$1" and hits[0].distance is not None


async def test_a_model_whose_size_cannot_be_learnt_is_a_clear_error(
    fake_embeddings: FakeEmbeddings, pool: asyncpg.Pool, database_url: str
) -> None:
    fake_embeddings.fail_status = 503
    config = memory_config(database_url, **fake_model_sections(fake_embeddings))
    with pytest.raises(EmbeddingError, match="embeddings.dimensions"):
        await Memory.open(config, pool)


async def test_changing_the_model_is_refused_until_reindex(
    open_memory: MemoryFactory,
    fake_embeddings: FakeEmbeddings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    local = await open_memory()
    await local.indexer.add(inputs())
    await local.indexer.flush()
    await local.close()

    with caplog.at_level(logging.ERROR, logger="bot.memory"):
        other = await open_memory(**fake_model_sections(fake_embeddings))
    assert "run `doryo reindex -c config.yaml`" in caplog.text
    with pytest.raises(EmbeddingModelMismatch, match="doryo reindex -c config.yaml") as refused:
        await other.search("ws", "when is the launch?")
    assert refused.value.stored_model == "local/all-minilm-l6-v2"
    assert (refused.value.stored_dims, refused.value.dims) == (384, 64)
    with pytest.raises(EmbeddingModelMismatch):
        await other.search("ws", "launch", mode="vector")
    with pytest.raises(EmbeddingModelMismatch):
        await other.remember("ws", "A fact", author="@a:hs")
    # Words still work; history keeps flowing in, stored to be embedded by the reindex.
    assert (await other.search("ws", "payment provider", mode="fulltext"))[0].item.event_id == "$1"
    await other.indexer.add([MemoryInput(workspace_id="ws", text="Late news.", event_id="$4")])
    await other.indexer.flush()
    assert (await other.stats("ws")).unembedded == 1
    assert await vector_type(other) == "vector(384)"  # nothing of the new model went in

    result = await other.reindex(batch_size=2)
    assert (result.model, result.dims, result.items) == ("fake/fake-embed", 64, 4)
    assert await vector_type(other) == "vector(64)"
    stats = await other.stats("ws")
    assert (stats.model, stats.dims, stats.unembedded) == ("fake/fake-embed", 64, 0)
    hits = await other.search("ws", "payment provider", k=1, mode="vector")
    assert hits[0].item.event_id == "$1"
    assert await other.remember("ws", "A fact", author="@a:hs") is not None
    count = await other.store.pool.fetchval("SELECT count(*) FROM memory_vectors")
    assert count == 5
    await other.close()

    # Same size, other model: still refused (the recorded model is compared, not just the size).
    same_size = await open_memory(**fake_model_sections(fake_embeddings, dimensions=384))
    with pytest.raises(EmbeddingModelMismatch, match="fake/fake-embed@384"):
        await same_size.search("ws", "launch")
    await same_size.close()

    # And back to the local model.
    local = await open_memory()
    with pytest.raises(EmbeddingModelMismatch):
        await local.search("ws", "launch")
    await local.reindex()
    assert (await local.search("ws", "when is the launch?", k=1))[0].item.event_id == "$1"
    assert await vector_type(local) == "vector(384)"


async def test_reindex_catches_up_with_writes_made_while_it_ran(
    memory: Memory, fake_embeddings: FakeEmbeddings
) -> None:
    await memory.indexer.add(inputs())
    await memory.indexer.flush()
    config = memory_config("embedded", **fake_model_sections(fake_embeddings))
    new = build_embedder(config)
    try:
        store = memory.store
        reindexing = ReindexStore(store.pool, store.indexes)
        await reindexing.begin(await new.dimensions())
        rows = await reindexing.items_after(0, limit=100)
        await reindexing.write(rows, await new.embed([r[3] for r in rows]))
        last = rows[-1][0]
        # Meanwhile the running bot (old model) stores, edits and redacts.
        await memory.indexer.add([MemoryInput(workspace_id="ws", text="New one.", event_id="$4")])
        await memory.indexer.update_event("ws", "$2", "Dinner is on Thursday now.")
        await memory.indexer.delete_event("ws", "$3")
        await memory.indexer.flush()
        await reindexing.build_index(maintenance_work_mem="64MB")
        caught_up = await reindexing.swap(new.model, await new.dimensions(), last, new.embed)
        assert caught_up == 2  # the new item and the edited one
        rows = await store.pool.fetch(
            "SELECT i.event_id FROM memory_vectors v JOIN memory_items i ON i.id = v.item_id "
            "ORDER BY i.event_id"
        )
        assert [r[0] for r in rows] == ["$1", "$2", "$4"]
        assert (await store.recorded_model()) is not None
        assert (await store.recorded_model()).model == "fake/fake-embed"  # type: ignore[union-attr]
    finally:
        await new.aclose()


def write_config(
    path: Path, fake: FakeEmbeddings, database_url: str, model: str = "fake/fake-embed"
) -> None:
    data = {
        "appservice": dict(TOKENS),
        "database": {"url": database_url},
        "llm": {
            "providers": {"fake": {"kind": "openai", "base_url": fake.base_url}},
            "default_model": "fake/chat",
        },
        "embeddings": {"model": model, "timeout": 5},
        "data_dir": str(path.parent),
    }
    with path.open("w") as f:
        YAML().dump(data, f)


async def test_doryo_reindex_command(
    memory: Memory, fake_embeddings: FakeEmbeddings, database_url: str, tmp_path: Path
) -> None:
    await memory.indexer.add(inputs())
    await memory.indexer.flush()
    path = tmp_path / "config.yaml"
    write_config(path, fake_embeddings, database_url)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "reindex",
        "-c",
        str(path),
        "--batch-size",
        "2",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(120):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert "memory re-embedded with fake/fake-embed (64 dimensions): 3 items" in out.decode()
    assert (await memory.store.recorded_model()).dims == 64  # type: ignore[union-attr]
    # The running memory (local model) now refuses, as it should.
    with pytest.raises(EmbeddingModelMismatch):
        await memory.search("ws", "launch")

    # A bad embeddings.model is a config error: exit code 2, naming the key.
    write_config(path, fake_embeddings, database_url, model="nowhere/model")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "reindex",
        "-c",
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(120):
        out, err = await process.communicate()
    assert process.returncode == 2
    assert "embeddings.model: 'nowhere/model' names no provider 'nowhere'" in err.decode()


async def test_a_question_is_not_kept_waiting_by_indexing(local_embedder: LocalEmbedder) -> None:
    """Indexing runs in a worker of its own at the lowest CPU priority: a question embedded
    while a long batch is indexed comes back long before the batch."""
    long_texts = [
        f"Message {n}: " + "the release notes mention the payment provider " * 20
        for n in range(96)
    ]
    finished: list[str] = []

    async def embed(texts: list[str], name: str, *, interactive: bool) -> None:
        await local_embedder.embed(texts, interactive=interactive)
        finished.append(name)

    indexing = asyncio.create_task(embed(long_texts, "indexing", interactive=False))
    await asyncio.sleep(0.05)  # the batch is in its worker
    await embed(["When is the launch?"], "question", interactive=True)
    await indexing
    assert finished == ["question", "indexing"]
    assert await local_embedder.niceness() == {"interactive": 0, "indexing": 19}


async def test_a_worker_that_dies_is_replaced() -> None:
    """A worker killed (out of memory, by hand) fails the batch it had, with an EmbeddingError
    that memory handles; the next batch gets a new worker."""
    embedder = LocalEmbedder("all-minilm-l6-v2")
    before = set(multiprocessing.active_children())
    try:
        await embedder.load()
        workers = set(multiprocessing.active_children()) - before
        assert len(workers) == 2
        for worker in workers:
            os.kill(worker.pid or 0, signal.SIGKILL)
            worker.join(10)
        with pytest.raises(EmbeddingError, match="embedding worker stopped"):
            await embedder.embed(["When is the launch?"], interactive=True)
        vectors = await embedder.embed(["When is the launch?"], interactive=True)
        assert vectors.shape == (1, 384)
    finally:
        await embedder.aclose()


async def test_bfloat16_makes_the_float32_model_s_vectors(local_embedder: LocalEmbedder) -> None:
    """Where the CPU multiplies bfloat16 in hardware, the model computes in it ("auto") if its
    vectors agree with float32's on the probe texts; in both workers they then agree to a cosine
    of 0.9998, short and long texts, so the vectors already stored stay comparable. Elsewhere,
    and where the probes disagree (an AMD EPYC with AVX512-BF16 but no AMX: 0.99980 on
    "Thanks!"), even a model told bfloat16 computes in float32."""
    texts = [
        "When is the launch?",
        "ok",
        "Grace: the staging database ran out of disk at 02:10; I moved the WAL archive to the "
        "new volume and restarted the replica.",
        " ".join(
            f"Item {n} of the retro: the flaky checkout test, the slow CI cache."
            for n in range(30)
        ),
    ]
    exact = LocalEmbedder("all-minilm-l6-v2", precision="float32")
    lowered = LocalEmbedder("all-minilm-l6-v2", precision="bfloat16")
    try:
        await asyncio.gather(exact.load(), lowered.load())
        assert exact.precision == "float32"
        assert lowered.precision in ("bfloat16", "float32")  # float32: the probes disagreed
        native = embedding_worker._native_bfloat16()
        assert local_embedder.precision == (lowered.precision if native else "float32")
        reference = await exact.embed(texts)
        for embedder in (lowered, local_embedder):
            for interactive in (True, False):
                vectors = await embedder.embed(texts, interactive=interactive)
                agreement = np.sum(vectors * reference, axis=1)
                assert agreement.min() >= embedding_worker.AGREEMENT, agreement
    finally:
        await exact.aclose()
        await lowered.aclose()


async def test_the_mpnet_model_links_a_wish_to_what_was_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_embedder: LocalEmbedder
) -> None:
    """`local/all-mpnet-base-v2` (the `mpnet` extra) loads from its five packages' archive,
    checked and assembled in the model cache, in both workers, which make the same
    768-dimensional vectors; they put Grace's "thick novel" higher of her chat than
    all-MiniLM-L6-v2 does, in the same run, for "Would Grace like a bookshop gift card?"
    (bench/recall.py's "inference"; second or third, MiniLM fifth or sixth: in bfloat16
    the close scores of short small talk swap places between CPUs), and first for a plainer
    question."""
    monkeypatch.setenv("DORYO_MODEL_CACHE", str(tmp_path / "models"))
    said = [
        "Grace: Nothing beats a rainy afternoon with a thick novel and tea.",
        "Grace: Are the boxes unpacked yet?",
        "Grace: Can't wait for the new bakery on the corner.",
        "Grace: Just back from grocery shopping, my phone died.",
        "Hugo: I never have the patience for long novels, I fall asleep after a page.",
        "Grace: Sorry for the late reply, my sister visited.",
        "Grace: We should talk about the match properly over coffee.",
        "Grace: I drive a Volvo these days, it's been great on long trips.",
    ]
    embedder = LocalEmbedder("all-mpnet-base-v2")
    try:
        await embedder.load()
        assert await embedder.dimensions() == 768
        assert [p.name for p in (tmp_path / "models").iterdir()] == [
            "all-mpnet-base-v2-78c0197b6159"
        ]
        texts = await embedder.embed(said)
        assert texts.shape == (len(said), 768)
        asked = ["Would Grace like a bookshop gift card?", "Does Grace like books?"]
        questions = await embedder.embed(asked, interactive=True)
        assert np.min(np.sum(questions * await embedder.embed(asked), axis=1)) >= 0.9998
        ranks = [int(np.sum(texts @ q > texts[0] @ q)) + 1 for q in questions]
        small = await local_embedder.embed(said)
        wish = (await local_embedder.embed(asked[:1], interactive=True))[0]
        small_rank = int(np.sum(small @ wish > small[0] @ wish)) + 1
        assert ranks[0] < small_rank and ranks[0] <= 3 and ranks[1] == 1, (ranks, small_rank)
    finally:
        await embedder.aclose()
