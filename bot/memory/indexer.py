"""Indexing: what the workspaces say goes into memory asynchronously, in batches.

    await indexer.add([MemoryInput(...), ...])    queue items (waits only if the queue is full)
    await indexer.update_event(ws, event, text)   an edit: the item is re-embedded
    await indexer.delete_event(ws, event)         a redaction: the item, and what was derived
                                                  from it, is deleted
    await indexer.flush()                         wait until all queued so far is stored

One worker takes what is queued, up to memory.index_batch_size at a time (waiting up to
memory.index_batch_wait for a batch to fill), redacts and splits the texts, embeds them all in
one call to the model, and applies the batch in order in one transaction (so an edit or a
redaction queued after an item always wins over it).

When the embedding model fails, the batch is stored anyway, without vectors (found by words
until then), and embedded later when the queue is idle (backfill). Adding is idempotent per
workspace and source event: feeding the same history twice stores it once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from bot.core.config import MemoryConfig
from bot.core.errors import EmbeddingError, EmbeddingModelMismatch
from bot.memory.embeddings import Embedder, Vectors, names_the_speaker
from bot.memory.records import DeleteEvent, Insert, MemoryInput, NewItem, Replace, WriteOp
from bot.memory.speakers import Embeddable, Piece, embedding_texts
from bot.memory.store import MemoryStore
from bot.memory.text import chunk_text, redact

log = logging.getLogger(__name__)

# Database failures: a batch is tried this many times (with a growing pause) before it is dropped
# (the history it came from can be fed again; adding is idempotent).
_ATTEMPTS = 4
# The queue must have been idle this long before stored-but-unembedded items are embedded.
_BACKFILL_IDLE = 2.0
_BACKFILL_RETRY = 60.0
# Errors that repeat for every batch are logged at most this often.
_REPEAT_LOG = 300.0


def prepare_text(text: str, settings: MemoryConfig) -> list[str]:
    """The pieces a text is stored as: redacted as configured, split for the model."""
    text = redact(text, emails=settings.redact_emails, phone_numbers=settings.redact_phone_numbers)
    return chunk_text(text, settings.chunk_words)


def to_new_items(item: MemoryInput, settings: MemoryConfig) -> tuple[NewItem, ...]:
    """The rows an input is stored as (none for an empty text)."""
    created_at = item.created_at or datetime.now(UTC)
    return tuple(
        NewItem(
            workspace_id=item.workspace_id,
            kind=item.kind,
            text=piece,
            context=item.context,
            chunk=chunk,
            room_id=item.room_id,
            event_id=item.event_id,
            sender=item.sender,
            author=item.author,
            agent=item.agent,
            created_at=created_at,
            metadata=item.metadata,
            source_event_ids=item.source_event_ids,
        )
        for chunk, piece in enumerate(prepare_text(item.text, settings))
    )


@dataclass(frozen=True, slots=True)
class _Add:
    item: MemoryInput


@dataclass(frozen=True, slots=True)
class _Update:
    workspace_id: str
    event_id: str
    text: str
    edited_at: datetime


@dataclass(frozen=True, slots=True)
class _Delete:
    workspace_id: str
    event_id: str


_Op = _Add | _Update | _Delete


class Indexer:
    def __init__(
        self, store: MemoryStore, embedder: Embedder, settings: MemoryConfig, *, dims: int
    ) -> None:
        self._store = store
        self._embedder = embedder
        self._settings = settings
        self._dims = dims
        self._queue: asyncio.Queue[_Op] = asyncio.Queue(settings.index_queue_size)
        # Writes queued and done since start; the queue is FIFO, so once `_done` reaches what
        # `_queued` was, everything queued until then is done.
        self._queued = 0
        self._done = 0
        self._done_changed = asyncio.Condition()
        self._worker: asyncio.Task[None] | None = None
        self._backfill_wanted = True  # items may wait from an earlier run
        self._backfill_after = 0.0
        self._last_logged: dict[str, float] = {}
        self.stored = 0
        """Pieces stored since start (for metrics and benchmarks)."""

    # -- the API -----------------------------------------------------------------------------

    async def add(self, items: Iterable[MemoryInput]) -> None:
        for item in items:
            await self._put(_Add(item))

    async def update_event(
        self, workspace_id: str, event_id: str, text: str, *, edited_at: datetime | None = None
    ) -> None:
        await self._put(_Update(workspace_id, event_id, text, edited_at or datetime.now(UTC)))

    async def delete_event(self, workspace_id: str, event_id: str) -> None:
        await self._put(_Delete(workspace_id, event_id))

    async def flush(self, timeout: float = 60) -> None:
        """Wait until everything queued before this call is stored (or dropped, logged)."""
        if self._worker is None or self._worker.done():
            raise RuntimeError("the memory indexer is not running")
        target = self._queued
        async with asyncio.timeout(timeout), self._done_changed:
            await self._done_changed.wait_for(lambda: self._done >= target)

    def backfill_soon(self) -> None:
        """Items were stored without a vector elsewhere: embed them when the queue is idle."""
        self._backfill_wanted = True

    @property
    def pending(self) -> int:
        return self._queued - self._done

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name="memory indexer")

    async def stop(self, timeout: float = 10) -> None:
        """Store what is queued (for up to `timeout` seconds), then stop."""
        worker, self._worker = self._worker, None
        if worker is None:
            return
        try:
            if self.pending and not worker.done():
                self._worker = worker  # flush() checks it runs
                await self.flush(timeout)
        except TimeoutError:
            log.warning("memory indexer stopped with %d items not stored", self.pending)
        finally:
            self._worker = None
            worker.cancel()
            await asyncio.wait([worker])

    async def _put(self, op: _Op) -> None:
        await self._queue.put(op)
        self._queued += 1

    # -- the worker --------------------------------------------------------------------------

    async def _next_op(self) -> _Op:
        """The next queued write; while none comes, embed what was stored without a vector."""
        while True:
            if not self._backfill_wanted:
                return await self._queue.get()
            wait = max(_BACKFILL_IDLE, self._backfill_after - time.monotonic())
            try:
                async with asyncio.timeout(wait):
                    return await self._queue.get()
            except TimeoutError:
                await self._backfill_quietly()

    async def _next_batch(self) -> list[_Op]:
        first = await self._next_op()
        batch = [first]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.index_batch_wait
        while len(batch) < self._settings.index_batch_size:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    batch.append(await self._queue.get())
            except TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            try:
                await self._process(batch)
            except Exception:
                # The worker must outlive a bad batch; the history can feed it again.
                log.exception("memory: a batch of %d could not be indexed", len(batch))
            finally:
                async with self._done_changed:
                    self._done += len(batch)
                    self._done_changed.notify_all()

    def _log_repeating(self, key: str, level: int, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last_logged.get(key, -_REPEAT_LOG) >= _REPEAT_LOG:
            self._last_logged[key] = now
            log.log(level, message, *args)

    async def _process(self, batch: Sequence[_Op]) -> None:
        pieces: list[tuple[NewItem, ...] | list[str] | None] = []
        embeddable: list[Embeddable] = []
        # An edit is embedded as what it edits (context, sender): queued before it, or stored.
        edited: dict[tuple[str, str], Embeddable | None] = {}
        for op in batch:
            if isinstance(op, _Add):
                items = to_new_items(op.item, self._settings)
                pieces.append(items)
                embeddable += items
                if op.item.event_id is not None and items:
                    edited[(op.item.workspace_id, op.item.event_id)] = items[0]
            elif isinstance(op, _Update):
                chunks = prepare_text(op.text, self._settings)
                pieces.append(chunks)
                key = (op.workspace_id, op.event_id)
                if key not in edited:
                    stored = await self._store.by_event(*key)
                    edited[key] = stored[0] if stored else None
                was = edited[key]
                embeddable += [
                    Piece(was.kind, c, was.context, was.sender)
                    if was
                    else Piece("message", c, None, None)
                    for c in chunks
                ]
            else:
                pieces.append(None)
        texts = await embedding_texts(
            embeddable,
            with_speaker=names_the_speaker(self._embedder.model),
            names=self._store.display_names,
        )
        vectors: Vectors | None = None
        if texts:
            try:
                vectors = await self._embedder.embed(texts)
            except EmbeddingError as e:
                self._log_repeating(
                    "embed",
                    logging.WARNING,
                    "memory: the embedding model failed (%s); storing %d pieces to embed later",
                    e,
                    len(texts),
                )
                self._backfill_wanted = True
        ops = _write_ops(batch, pieces, vectors)
        if not ops:
            return
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                result = await self._store.apply(ops, model=self._embedder.model, dims=self._dims)
                break
            except (asyncpg.PostgresError, OSError) as e:
                if attempt == _ATTEMPTS:
                    log.error(
                        "memory: dropped a batch of %d after %d attempts: %s",
                        len(batch),
                        attempt,
                        e,
                    )
                    return
                log.warning("memory: storing a batch failed (%s); retrying", e)
                await asyncio.sleep(0.5 * 2**attempt)
        self.stored += len(result.inserted) + result.replaced
        if result.mismatch is not None:
            self._log_repeating(
                "mismatch", logging.ERROR, "memory: %s (stored by words only)", result.mismatch
            )
        elif result.unembedded:
            self._backfill_wanted = True

    # -- embedding what was stored without a vector ------------------------------------------

    async def backfill(self, *, limit: int | None = None) -> int:
        """Embed items stored without a vector. Returns how many got one."""
        done = 0
        size = max(self._settings.index_batch_size, 16)
        while limit is None or done < limit:
            items = await self._store.unembedded(limit=size)
            if not items:
                break
            vectors = await self._embedder.embed(
                await embedding_texts(
                    items,
                    with_speaker=names_the_speaker(self._embedder.model),
                    names=self._store.display_names,
                )
            )
            done += await self._store.add_vectors(
                items, vectors, model=self._embedder.model, dims=self._dims
            )
        return done

    async def _backfill_quietly(self) -> None:
        try:
            count = await self.backfill(limit=self._settings.index_batch_size * 16)
        except EmbeddingModelMismatch as e:
            self._log_repeating("mismatch", logging.ERROR, "memory: %s", e)
            self._backfill_after = time.monotonic() + _BACKFILL_RETRY
            return
        except (EmbeddingError, asyncpg.PostgresError, OSError) as e:
            log.warning("memory: embedding stored items failed (%s); trying again later", e)
            self._backfill_after = time.monotonic() + _BACKFILL_RETRY
            return
        if count:
            log.info("memory: embedded %d items stored earlier without a vector", count)
        remaining = await self._store.unembedded(limit=1)
        self._backfill_wanted = bool(remaining)


def _write_ops(
    batch: Sequence[_Op],
    pieces: Sequence[tuple[NewItem, ...] | list[str] | None],
    vectors: Vectors | None,
) -> list[WriteOp]:
    """The batch as store writes, in order; runs of adds become one Insert."""
    ops: list[WriteOp] = []
    offset = 0
    run: list[NewItem] = []
    run_start = 0

    def close_run() -> None:
        if run:
            rows = None if vectors is None else vectors[run_start : run_start + len(run)]
            ops.append(Insert(tuple(run), rows))
            run.clear()

    for op, piece in zip(batch, pieces, strict=True):
        if isinstance(op, _Add):
            assert isinstance(piece, tuple)
            if not run:
                run_start = offset
            run.extend(piece)
            offset += len(piece)
            continue
        close_run()
        if isinstance(op, _Update):
            assert isinstance(piece, list)
            rows = None if vectors is None else vectors[offset : offset + len(piece)]
            offset += len(piece)
            if piece:
                ops.append(Replace(op.workspace_id, op.event_id, tuple(piece), rows, op.edited_at))
            else:  # edited to nothing: nothing left to remember
                ops.append(DeleteEvent(op.workspace_id, op.event_id))
        else:
            ops.append(DeleteEvent(op.workspace_id, op.event_id))
    close_run()
    return ops
