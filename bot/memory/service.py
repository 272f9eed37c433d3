"""Memory, the one object the rest of Doryo talks to: search, remember, forget, stats,
retention, reindex; and the indexer that feeds it.

    memory = await Memory.open(config, pool)        # at start; it lives on the Context
    await memory.indexer.add([MemoryInput(...)])    # from the session history
    hits = await memory.search(workspace_id, "what did we decide about the launch?", k=5)
    await memory.close()                            # at stop: stores what is queued

Searches fuse two rankings by reciprocal rank fusion: by meaning (the embedding model, pgvector)
and by words (PostgreSQL full-text search). Either can run alone: mode="fulltext" needs no model
(and is what a hybrid search falls back to when the model is down).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeVar

import asyncpg

from bot.core.config import Config, MemoryConfig
from bot.core.errors import EmbeddingError, EmbeddingModelMismatch
from bot.core.tasks import outcome_seen
from bot.memory.embeddings import Embedder, Vectors, build_embedder, names_the_speaker
from bot.memory.indexer import Indexer, to_new_items
from bot.memory.indexes import OwnIndexes
from bot.memory.records import (
    Candidate,
    DeleteItems,
    Insert,
    MemoryInput,
    MemoryItem,
    MemoryKind,
    MemoryStats,
    WriteOp,
)
from bot.memory.reindex import ReindexResult, reindex
from bot.memory.speakers import embedding_texts
from bot.memory.store import MemoryStore
from bot.memory.text import STOPWORDS, embedding_text, extractive_summary

log = logging.getLogger(__name__)

SearchMode = Literal["hybrid", "vector", "fulltext"]

Summarizer = Callable[[Sequence[MemoryItem]], Awaitable[str]]
"""Turns a stretch of one room's messages (in time order) into a summary text."""

# Retention compacts at most this many messages into one summary.
RETENTION_GROUP = 100


@dataclass(frozen=True, slots=True)
class MemoryHit:
    item: MemoryItem
    score: float
    """The fused score: higher is better (only comparable within one search)."""
    vector_rank: int | None
    """Rank among the candidates by meaning (1 = closest), None if not among them."""
    text_rank: int | None
    distance: float | None
    """Cosine distance to the question: 0 same meaning, 1 unrelated."""


@dataclass(frozen=True, slots=True)
class PruneResult:
    deleted: int
    summaries: int


_N = TypeVar("_N", int, float)

NAMES_TTL = 300.0
"""How long a sender's display name is kept for search (people rarely rename)."""
NAMES_CACHED = 100_000
PEOPLE_READ = 10_000
"""How many of a workspace's people a search knows by name (one index probe each, cached)."""
WORKSPACES_CACHED = 10_000

_WORD = re.compile(r"[^\W\d_]{2,}")


def person_words(user_id: str | None, display_name: str | None = None) -> frozenset[str]:
    """The words of a person's name, as their Matrix ID spells it (`@maria.lopez:hs` → maria,
    lopez) and their display name ("Dana Schmidt"), lower case: what a question that names them
    may say."""
    if not user_id:
        return frozenset()
    localpart = user_id.removeprefix("@").split(":", 1)[0]
    return frozenset(w.lower() for w in _WORD.findall(f"{localpart} {display_name or ''}"))


def question_words(query: str) -> frozenset[str]:
    """The words of a question that may name someone, lower case, possessives ("Evan's") as
    the name. A common word ("what", "will", "may") only when it is capitalised after the
    question's first word: "What did Will say?" names Will, "when will we launch?" nobody."""
    words = _WORD.findall(query.replace("’", "'"))
    return frozenset(
        w.lower()
        for n, w in enumerate(words)
        if w.lower() not in STOPWORDS or (n > 0 and w[0].isupper() and not w.isupper())
    )


def fuse(
    candidates: Sequence[Candidate],
    *,
    rrf_k: int,
    vector_weight: float,
    text_weight: float,
    speaker_weight: float = 0.0,
    named: frozenset[str] = frozenset(),
    names: Mapping[str, str] | None = None,
    also: Sequence[Candidate] = (),
) -> list[MemoryHit]:
    """Reciprocal rank fusion: each ranking adds weight / (rrf_k + rank); best first (ties: the
    newer item). A third signal is who said it: an item whose sender the question names (its
    words `named`; `names`: senders' display names) adds speaker_weight / (rrf_k + 1), as if it
    ranked first in a list of its own — people say "I …", questions say "Evan": neither words
    nor meaning link the two. `also`: the rankings of a second search (the question without
    the names of the people it asks about), added like the first's."""
    names = names or {}
    scores: dict[int, float] = {}
    best: dict[int, MemoryHit] = {}
    for c in (*candidates, *also):
        score = scores.get(c.item.id, 0.0)
        if c.vector_rank is not None:
            score += vector_weight / (rrf_k + c.vector_rank)
        if c.text_rank is not None:
            score += text_weight / (rrf_k + c.text_rank)
        scores[c.item.id] = score
        seen = best.get(c.item.id)
        best[c.item.id] = (
            MemoryHit(c.item, 0.0, c.vector_rank, c.text_rank, c.distance)
            if seen is None
            else MemoryHit(
                c.item,
                0.0,
                _least(c.vector_rank, seen.vector_rank),
                _least(c.text_rank, seen.text_rank),
                _least(c.distance, seen.distance),
            )
        )
    hits = []
    for id_, hit in best.items():
        score = scores[id_]
        sender = hit.item.sender
        if speaker_weight and named & person_words(sender, names.get(sender or "")):
            score += speaker_weight / (rrf_k + 1)
        hits.append(replace(hit, score=score))
    hits.sort(key=lambda h: (-h.score, -h.item.id))
    return hits


async def _row(vectors: Awaitable[Vectors], index: int) -> Vectors:
    """One row of a batch's vectors, as a batch of one."""
    return (await vectors)[index : index + 1]


def _least(a: _N | None, b: _N | None) -> _N | None:
    return b if a is None else a if b is None else min(a, b)


def without_words(query: str, words: frozenset[str]) -> str:
    """`query` without `words` (any case; "Evan's" as "Evan"), spaces tidied."""
    if not words:
        return query
    pattern = r"\b(?:" + "|".join(re.escape(w) for w in sorted(words)) + r")(?:['’]s)?\b"
    return " ".join(re.sub(pattern, " ", query, flags=re.IGNORECASE).split())


def _said(text: str) -> str:
    """A text as a duplicate of it would read: case, spacing and punctuation left out (numbers
    kept: "the budget is 40k" and "… 50k" say different things)."""
    return " ".join(re.findall(r"\w+", text.lower()))


def best_per_source(hits: Sequence[MemoryHit], k: int) -> list[MemoryHit]:
    """The first `k` hits, keeping one piece per source event and kind (a long message split
    in pieces is one result), and leaving out what a better hit of the same person already
    says word for word — the tenth "do you still drive that old car?", or the same question
    with small talk after it, tells the model nothing the first did not, and takes the place of
    something that might. The same words from someone else are kept: "I drive a Volvo" says
    something else of each person who says it."""
    seen: set[tuple[str, str]] = set()
    said_by: dict[str | None, list[str]] = {}
    out = []
    for hit in hits:
        if hit.item.event_id is not None:
            key = (hit.item.kind, hit.item.event_id)
            if key in seen:
                continue
            seen.add(key)
        said = f" {_said(hit.item.text)} "
        kept = said_by.setdefault(hit.item.sender, [])
        if said.strip() and any(said in other for other in kept):
            continue
        kept.append(said)
        out.append(hit)
        if len(out) == k:
            break
    return out


def retention_groups(
    messages: Sequence[MemoryItem], max_size: int = RETENTION_GROUP
) -> list[list[MemoryItem]]:
    """Messages (in time order) grouped by room and UTC day, at most `max_size` per group."""
    groups: dict[tuple[str | None, str], list[list[MemoryItem]]] = {}
    for message in messages:
        key = (message.room_id, message.created_at.astimezone(UTC).date().isoformat())
        runs = groups.setdefault(key, [[]])
        if len(runs[-1]) >= max_size:
            runs.append([])
        runs[-1].append(message)
    return [run for runs in groups.values() for run in runs if run]


async def extractive_summarizer(messages: Sequence[MemoryItem]) -> str:
    """The summarizer that needs no model: the most informative messages, quoted."""
    return extractive_summary([(m.sender, m.text, m.created_at) for m in messages])


class Memory:
    def __init__(
        self, store: MemoryStore, embedder: Embedder, settings: MemoryConfig, *, dims: int
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.settings = settings
        self.dims = dims
        self.indexer = Indexer(store, embedder, settings, dims=dims)
        self._names: dict[str, tuple[str | None, float]] = {}
        self._people: dict[str, tuple[frozenset[str], float]] = {}
        self._owns_embedder = False

    @classmethod
    async def open(
        cls,
        config: Config,
        pool: asyncpg.Pool,
        *,
        embedder: Embedder | None = None,
        start_indexer: bool = True,
    ) -> Memory:
        """Memory for `config`, on `pool`: the vectors table is created for the configured model
        if there is none. A model other than the recorded one is logged as an error here, and
        refused by every vector search (EmbeddingModelMismatch) until `doryo reindex`.

        `embedder`: a model already loaded (shared; not closed by close()). Default: the one
        embeddings.model names. Raises ConfigError for a bad embeddings.model, EmbeddingError
        when the size of its vectors cannot be learnt (set embeddings.dimensions)."""
        if embedder is not None:
            return await cls.start(pool, embedder, config.memory, start_indexer=start_indexer)
        owned = build_embedder(config)
        try:
            memory = await cls.start(pool, owned, config.memory, start_indexer=start_indexer)
        except BaseException:
            await owned.aclose()
            raise
        memory._owns_embedder = True
        return memory

    @classmethod
    async def start(
        cls,
        pool: asyncpg.Pool,
        embedder: Embedder,
        settings: MemoryConfig,
        *,
        start_indexer: bool = True,
    ) -> Memory:
        """Memory with this embedder and settings (see open(); the embedder stays the
        caller's)."""
        try:
            dims = await embedder.dimensions()
        except EmbeddingError as e:
            raise EmbeddingError(
                f"cannot learn the size of {embedder.model}'s vectors ({e}); set "
                "embeddings.dimensions, or make the provider reachable"
            ) from None
        store = MemoryStore(pool)
        record = await store.prepare(embedder.model, dims)
        if (record.model, record.dims) != (embedder.model, dims):
            mismatch = EmbeddingModelMismatch(
                stored_model=record.model, stored_dims=record.dims, model=embedder.model, dims=dims
            )
            log.error("%s", mismatch)
        memory = cls(store, embedder, settings, dims=dims)
        if start_indexer:
            memory.indexer.start()
        return memory

    async def close(self, timeout: float = 10) -> None:
        await self.indexer.stop(timeout)
        if self._owns_embedder:
            await self.embedder.aclose()

    # -- search ------------------------------------------------------------------------------

    async def embed_query(self, query: str) -> Vectors:
        return await self.embedder.embed([query], interactive=True)

    async def _query_vector(
        self, query: str, embedding: Awaitable[Vectors] | None, *, required: bool
    ) -> Vectors | None:
        """The query's vector; None (words only, with a warning) if the model fails and the
        search may go without it."""
        try:
            vectors = await (embedding or self.embed_query(query))
        except EmbeddingError as e:
            if required:
                raise
            log.warning("memory: the embedding model failed (%s); searching by words", e)
            return None
        row: Vectors = vectors[0]
        return row

    def embed_soon(self, query: str) -> asyncio.Task[Vectors]:
        """Start embedding a question now, for a `search(..., embedding=)` that comes later:
        the model's time then overlaps whatever the caller looks up meanwhile. A task left
        unused may be cancelled; its failure is raised by the search, never logged as lost."""
        task = asyncio.ensure_future(self.embed_query(query.strip()))
        task.add_done_callback(outcome_seen)
        return task

    async def search(
        self,
        workspace_id: str,
        query: str,
        *,
        k: int = 5,
        kinds: Sequence[MemoryKind] | None = None,
        mode: SearchMode = "hybrid",
        exact: bool | None = None,
        embedding: Awaitable[Vectors] | None = None,
    ) -> list[MemoryHit]:
        """The `k` items of a workspace that best answer `query`, best first, with their source
        (item.room_id, item.event_id) to cite.

        mode: "hybrid" (meaning and words; words only, with a warning, if the model fails),
        "vector" (meaning only) or "fulltext" (words only, no model). Raises
        EmbeddingModelMismatch (the operator must run `doryo reindex`) for the first two when the
        stored vectors were made by another model, EmbeddingError for "vector" when the model
        fails.

        embedding: the query's vector, already on its way (embed_soon)."""
        query = query.strip()
        if not query or k <= 0:
            return []
        settings = self.settings
        candidates = max(settings.candidates, 2 * k)
        named = question_words(query) if settings.speaker_weight else frozenset()
        people = named & await self._people_words(workspace_id) if named else frozenset()
        content = without_words(query, people)
        second = None
        if content != query and question_words(content):
            # The question names who said it ("What car does Evan drive?"), their message says
            # "I …", while the other person's "Hey Evan, still driving that old car?" holds both
            # the name and the words. Ranked again without the name, by what it asks (both
            # searches at once); the name counts once, as the speaker.
            second_vector: Awaitable[Vectors] | None = None
            if embedding is None and mode != "fulltext":
                # One call of the model for both questions: a batch of two costs about one.
                both = asyncio.ensure_future(
                    self.embedder.embed([query, content], interactive=True)
                )
                both.add_done_callback(outcome_seen)
                embedding, second_vector = _row(both, 0), _row(both, 1)
            second = asyncio.ensure_future(
                self._candidates(
                    workspace_id, content, second_vector, mode, kinds, candidates, exact
                )
            )
            second.add_done_callback(outcome_seen)
        try:
            found = await self._candidates(
                workspace_id, query, embedding, mode, kinds, candidates, exact
            )
            also: Sequence[Candidate] = await second if second is not None else ()
        finally:
            if second is not None:
                second.cancel()  # not needed after all: the first search failed
        senders = {c.item.sender for c in (*found, *also) if c.item.sender}
        names = await self._display_names(senders) if named else {}
        hits = fuse(
            found,
            rrf_k=settings.rrf_k,
            vector_weight=settings.vector_weight,
            text_weight=settings.fulltext_weight,
            speaker_weight=settings.speaker_weight,
            named=named,
            names=names,
            also=also,
        )
        return best_per_source(hits, k)

    async def _candidates(
        self,
        workspace_id: str,
        query: str,
        embedding: Awaitable[Vectors] | None,
        mode: SearchMode,
        kinds: Sequence[MemoryKind] | None,
        candidates: int,
        exact: bool | None,
    ) -> list[Candidate]:
        settings = self.settings
        vector = None
        if mode != "fulltext":
            # The model works while the store prepares the words and the plan; it awaits the
            # vector only then.
            vector = asyncio.ensure_future(
                self._query_vector(query, embedding, required=mode == "vector")
            )
            vector.add_done_callback(outcome_seen)
        try:
            return await self.store.search(
                workspace_id,
                text=None if mode == "vector" else query,
                vector=vector,
                model=self.embedder.model,
                dims=self.dims,
                kinds=kinds,
                candidates=candidates,
                ef_search=settings.ef_search,
                exact_below=settings.exact_search_below,
                fulltext_max_matches=settings.fulltext_max_matches,
                fulltext_min_match=settings.fulltext_min_match,
                exact=exact,
            )
        finally:
            if vector is not None:
                vector.cancel()  # not needed after all: the store failed first

    async def _people_words(self, workspace_id: str) -> frozenset[str]:
        """The words that name the people who said something in the workspace: their Matrix
        IDs' and display names' (read again after NAMES_TTL seconds; a newcomer's name counts
        from then, their messages as the speaker's at once)."""
        now = time.monotonic()
        known = self._people.get(workspace_id)
        if known is not None and now - known[1] <= NAMES_TTL:
            return known[0]
        if len(self._people) > WORKSPACES_CACHED:
            self._people.clear()
        senders = await self.store.senders(workspace_id, limit=PEOPLE_READ)
        names = await self._display_names(senders)
        words = frozenset(w for s in senders for w in person_words(s, names.get(s)))
        self._people[workspace_id] = (words, now)
        return words

    async def _display_names(self, senders: Iterable[str]) -> dict[str, str]:
        """People's display names (kept NAMES_TTL seconds)."""
        now = time.monotonic()
        if len(self._names) > NAMES_CACHED:  # before this search's senders go in
            self._names.clear()
        senders = set(senders)
        missing = [
            s for s in senders if (got := self._names.get(s)) is None or now - got[1] > NAMES_TTL
        ]
        if missing:
            known = await self.store.display_names(missing)
            for user in missing:
                self._names[user] = (known.get(user), now)
        return {s: name for s in senders if (name := self._names[s][0]) is not None}

    # -- direct writes -----------------------------------------------------------------------

    async def add_now(self, items: Sequence[MemoryInput]) -> list[MemoryItem]:
        """Store items at once, bypassing the queue (for commands that answer with the ID).
        Returns the first piece of each. Raises EmbeddingModelMismatch (nothing is stored)
        while the stored vectors belong to another model; when the model fails, the items are
        stored without vectors and embedded later."""
        record = await self.store.recorded_model()
        if record is not None and (record.model, record.dims) != (self.embedder.model, self.dims):
            raise EmbeddingModelMismatch(
                stored_model=record.model,
                stored_dims=record.dims,
                model=self.embedder.model,
                dims=self.dims,
            )
        rows = tuple(row for item in items for row in to_new_items(item, self.settings))
        if not rows:
            return []
        vectors: Vectors | None
        try:
            vectors = await self.embedder.embed(
                await embedding_texts(
                    rows,
                    with_speaker=names_the_speaker(self.embedder.model),
                    names=self.store.display_names,
                ),
                interactive=True,
            )
        except EmbeddingError as e:
            log.warning("memory: the embedding model failed (%s); embedding later", e)
            vectors = None
        result = await self.store.apply(
            [Insert(rows, vectors)], model=self.embedder.model, dims=self.dims
        )
        if result.unembedded:
            self.indexer.backfill_soon()
        return [item for item in result.inserted if item.chunk == 0]

    async def remember(
        self,
        workspace_id: str,
        text: str,
        *,
        author: str,
        room_id: str | None = None,
        event_id: str | None = None,
        agent: str | None = None,
    ) -> MemoryItem | None:
        """A long-term fact (`!remember`). None when the text is empty."""
        stored = await self.add_now(
            [
                MemoryInput(
                    workspace_id=workspace_id,
                    text=text,
                    kind="fact",
                    room_id=room_id,
                    event_id=event_id,
                    sender=author,
                    author=author,
                    agent=agent,
                )
            ]
        )
        return stored[0] if stored else None

    async def get(self, workspace_id: str, item_id: int) -> MemoryItem | None:
        return await self.store.get(workspace_id, item_id)

    async def forget(self, workspace_id: str, item_id: int) -> bool:
        """Delete an item (and the other pieces of its source). False if there was none in this
        workspace. Who may do it is the caller's check (`!forget`: host or author)."""
        result = await self.store.apply(
            [DeleteItems(workspace_id, (item_id,))], model=self.embedder.model, dims=self.dims
        )
        return result.deleted > 0

    async def stats(self, workspace_id: str) -> MemoryStats:
        return await self.store.stats(workspace_id)

    # -- retention ---------------------------------------------------------------------------

    async def prune(
        self,
        workspace_id: str,
        *,
        days: int | None = None,
        mode: Literal["compact", "delete"] | None = None,
        summarizer: Summarizer | None = None,
        now: datetime | None = None,
    ) -> PruneResult:
        """Apply retention to a workspace: messages older than `days` (default
        memory.retention_days; 0 keeps everything) are compacted into summaries, one per room,
        day and up to RETENTION_GROUP messages, or deleted (`mode`, default
        memory.retention_mode). `summarizer` (an LLM, say) defaults to the extractive one, which
        also stands in when it fails."""
        days = self.settings.retention_days if days is None else days
        mode = mode or self.settings.retention_mode
        if days <= 0:
            return PruneResult(0, 0)
        cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
        if mode == "delete":
            return PruneResult(await self.store.delete_messages_before(workspace_id, cutoff), 0)
        deleted = summaries = 0
        while messages := await self.store.messages_before(workspace_id, cutoff, limit=1000):
            for group in retention_groups(messages):
                deleted += await self._compact(workspace_id, group, summarizer)
                summaries += 1
        return PruneResult(deleted, summaries)

    async def _compact(
        self, workspace_id: str, group: Sequence[MemoryItem], summarizer: Summarizer | None
    ) -> int:
        text = ""
        if summarizer is not None:
            try:
                text = await summarizer(group)
            except Exception:  # the summarizer is the caller's (an LLM); never lose messages
                log.warning(
                    "memory: the summarizer failed; summarizing extractively", exc_info=True
                )
        if not text.strip():
            text = await extractive_summarizer(group)
        first, last = group[0], group[-1]
        summary = MemoryInput(
            workspace_id=workspace_id,
            text=text,
            kind="summary",
            context=first.context,
            room_id=first.room_id,
            created_at=last.created_at,
            metadata={
                "source": "retention",
                "messages": len(group),
                "from": first.created_at.isoformat(),
                "to": last.created_at.isoformat(),
            },
            source_event_ids=tuple(m.event_id for m in group if m.event_id),
        )
        rows = to_new_items(summary, self.settings)
        vectors: Vectors | None
        try:
            vectors = await self.embedder.embed([embedding_text(r.text, r.context) for r in rows])
        except EmbeddingError:
            vectors = None
        ops: list[WriteOp] = [
            Insert(rows, vectors),
            DeleteItems(workspace_id, tuple(m.id for m in group)),
        ]
        result = await self.store.apply(ops, model=self.embedder.model, dims=self.dims)
        return result.deleted

    async def prune_all(
        self,
        *,
        summarizer: Summarizer | None = None,
        days_for: Callable[[str], Awaitable[int | None]] | None = None,
        now: datetime | None = None,
    ) -> dict[str, PruneResult]:
        """Retention for every workspace. `days_for(workspace_id)` gives a workspace's own
        setting (None: memory.retention_days)."""
        now = now or datetime.now(UTC)
        default = self.settings.retention_days
        if days_for is None and default <= 0:
            return {}
        # With settings per workspace, any workspace with messages may have some to prune.
        since = now if days_for is not None else now - timedelta(days=default)
        results = {}
        for workspace_id in await self.store.workspaces_with_messages_before(since):
            days = (await days_for(workspace_id) if days_for else None) or default
            result = await self.prune(workspace_id, days=days, summarizer=summarizer, now=now)
            if result.deleted:
                results[workspace_id] = result
        return results

    # -- indexes -----------------------------------------------------------------------------

    async def index_workspaces(self) -> OwnIndexes:
        """Give workspaces of at least memory.exact_search_below vectors (and less than half of
        all) an HNSW index of their own; drop those of workspaces that shrank below half that.
        Takes as long as the builds (seconds for a workspace of 25k, in the background)."""
        return await self.store.indexes.build(min_size=self.settings.exact_search_below)

    async def reindex(
        self, *, batch_size: int = 256, progress: Callable[[int], None] | None = None
    ) -> ReindexResult:
        return await reindex(
            self.store,
            self.embedder,
            batch_size=batch_size,
            progress=progress,
            own_index_min=self.settings.exact_search_below,
        )
