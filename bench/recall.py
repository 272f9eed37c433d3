"""Memory search against textbook retrievers, on long two-person conversations (recall@1/5/10).

    .venv/bin/python bench/recall.py [--conversations 10] [--sessions 12] [--per-session 40]

The conversations and their questions are made by code (tests/data/conversations.py): people
state facts in the first person, questions name them, dates answer "when", some answers are
spread over several messages. Each conversation is a workspace in an embedded PostgreSQL,
stored through Doryo's memory (the local all-MiniLM-L6-v2 model) as the bot stores messages:
text, session topic, sender and time. The same texts then go through textbook baselines in the
same run: Okapi BM25 (k1 1.2, b 0.75) over the message texts; MiniLM cosine over the texts; the
same model over "<sender's name>: <text>"; and BM25 + MiniLM by reciprocal rank fusion (k 60).
`--model all-mpnet-base-v2` runs Doryo on that built-in model instead (the `mpnet` extra), and
adds the same three dense baselines made with it: a better model is compared with itself too.

Printed: recall@1/5/6/10 per retriever (6: what an @ask puts before the model), recall@5 per
kind of question, Doryo's default (hybrid) over the best baseline at @5 (target ≥ 1.10,
overall and for every kind), and the median time per query.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.core import db  # noqa: E402
from bot.core.config import MemoryConfig  # noqa: E402
from bot.core.embedded_pg import start_embedded, stop_embedded  # noqa: E402
from bot.memory import LocalEmbedder, Memory  # noqa: E402
from tests.data.conversations import (  # noqa: E402
    KINDS,
    Conversation,
    Question,
    as_memories,
    conversations,
)  # noqa: E402

K = (1, 5, 6, 10)
PROMPT = 6
MINILM = "all-minilm-l6-v2"
"""agent.memories in config.example.yaml: how many memories an @ask puts before the model."""
STOPWORDS = frozenset(
    """a an the and or but if of to in on at by for with from as is are was were be been being
    i me my you your he she it we they them his her its our their this that these those what
    which who whom when where why how do does did done have has had not no so than too very
    can will just about into over after before again still""".split()
)

Ranking = Callable[[str], list[str]]
"""A question → event IDs, best first."""


def tokens(text: str) -> list[str]:
    return [t for t in re.findall(r"[a-z0-9]+", text.lower()) if t not in STOPWORDS]


class BM25:
    """Okapi BM25 as textbooks give it (Robertson & Zaragoza), k1 1.2, b 0.75."""

    def __init__(self, ids: Sequence[str], texts: Sequence[str], k1: float = 1.2, b: float = 0.75):
        self.ids = list(ids)
        self.docs = [Counter(tokens(t)) for t in texts]
        self.lengths = [sum(d.values()) for d in self.docs]
        self.avg = sum(self.lengths) / max(1, len(self.docs))
        df: Counter[str] = Counter()
        for d in self.docs:
            df.update(d.keys())
        n = len(self.docs)
        self.idf = {t: math.log((n - f + 0.5) / (f + 0.5) + 1) for t, f in df.items()}
        self.k1, self.b = k1, b

    def __call__(self, question: str) -> list[str]:
        terms = [t for t in set(tokens(question)) if t in self.idf]
        scores = []
        for i, d in enumerate(self.docs):
            s = 0.0
            for t in terms:
                tf = d.get(t, 0)
                if tf:
                    norm = self.k1 * (1 - self.b + self.b * self.lengths[i] / self.avg)
                    s += self.idf[t] * tf * (self.k1 + 1) / (tf + norm)
            if s > 0:
                scores.append((s, i))
        scores.sort(key=lambda x: (-x[0], x[1]))
        return [self.ids[i] for _, i in scores[:10]]


class Dense:
    def __init__(
        self, ids: Sequence[str], vectors: np.ndarray, embed: Callable[[str], np.ndarray]
    ):
        self.ids = list(ids)
        self.vectors = vectors
        self.embed = embed

    def __call__(self, question: str) -> list[str]:
        scores = self.vectors @ self.embed(question)
        return [self.ids[i] for i in np.argsort(-scores)[:10]]


def fused(*rankings: Ranking, k: int = 60) -> Ranking:
    def rank(question: str) -> list[str]:
        score: Counter[str] = Counter()
        for ranking in rankings:
            for r, event in enumerate(ranking(question), start=1):
                score[event] += 1 / (k + r)
        return [e for e, _ in score.most_common(10)]

    return rank


def recall(found: Sequence[str], evidence: Sequence[str], k: int) -> float:
    return len(set(found[:k]) & set(evidence)) / len(evidence)


class Scores:
    def __init__(self) -> None:
        self.by_kind: dict[str, list[dict[int, float]]] = {}
        self.seconds: list[float] = []

    def add(self, kind: str, found: Sequence[str], evidence: Sequence[str], took: float) -> None:
        self.by_kind.setdefault(kind, []).append({k: recall(found, evidence, k) for k in K})
        self.seconds.append(took)

    def at(self, k: int, kind: str | None = None) -> float:
        rows = [r for key, rs in self.by_kind.items() if kind in (None, key) for r in rs]
        return statistics.fmean(r[k] for r in rows) if rows else 0.0


async def load(memory: Memory, conv: Conversation) -> None:
    items = as_memories(conv)
    # People have display names, kept from the rooms' member events as the bot keeps them.
    await memory.store.pool.executemany(
        "INSERT INTO room_members (room_id, user_id, membership, displayname) "
        "VALUES ($1, $2, 'join', $3) ON CONFLICT DO NOTHING",
        sorted({(m.room, f"@{m.sender}:bench", m.sender.title()) for m in conv.messages}),
    )
    for start in range(0, len(items), 500):
        await memory.add_now(items[start : start + 500])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conversations", type=int, default=10)
    parser.add_argument("--sessions", type=int, default=12)
    parser.add_argument("--per-session", type=int, default=40)
    parser.add_argument(
        "--model",
        default="all-minilm-l6-v2",
        help="the built-in embedding model Doryo searches with (baselines: MiniLM, and this one)",
    )
    parser.add_argument(
        "--set", action="append", default=[], help="a memory setting KEY=VALUE, to compare"
    )
    parser.add_argument(
        "--misses",
        action="append",
        default=[],
        metavar="KIND",
        help="print the questions of this kind the default search misses at 5",
    )
    args = parser.parse_args()
    settings = MemoryConfig(**dict(kv.split("=", 1) for kv in args.set))
    convs = conversations(args.conversations, sessions=args.sessions, per_session=args.per_session)
    messages = sum(len(c.messages) for c in convs)
    questions = sum(len(c.questions) for c in convs)
    print(f"{len(convs)} conversations, {messages:,} messages, {questions} questions")
    embedder = LocalEmbedder(args.model, batch_size=128)
    await embedder.load()
    models = {"MiniLM": embedder if args.model == MINILM else LocalEmbedder(MINILM)}
    if args.model != MINILM:
        await models["MiniLM"].load()
        models[args.model.split("-")[1]] = embedder
    with tempfile.TemporaryDirectory(prefix="doryo-recall-") as tmp:
        url, server = await start_embedded(Path(tmp) / "pg")
        try:
            pool = await db.connect(url, min_size=1, max_size=4)
            await db.migrate(pool)
            memory = await Memory.start(pool, embedder, settings)
            started = time.perf_counter()
            for conv in convs:
                await load(memory, conv)
            print(f"stored and embedded in {time.perf_counter() - started:.0f} s")
            scores = await run(memory, models, convs, misses=set(args.misses))
            await memory.close()
            for other in models.values():
                if other is not embedder:
                    await other.aclose()
            await pool.close()
        finally:
            await stop_embedded(server)
    report(scores)


async def run(
    memory: Memory,
    models: dict[str, LocalEmbedder],
    convs: Sequence[Conversation],
    misses: set[str] = frozenset(),  # type: ignore[assignment]
) -> dict[str, Scores]:
    """`models`: the embedding models the dense baselines are made with, by a short name."""
    names = ["doryo hybrid (default)", "doryo fulltext", "doryo vector", "BM25 over texts"]
    for model in models:
        names += [f"{model} over texts", f"{model} over name: text", f"BM25 + {model} (RRF)"]
    scores = {name: Scores() for name in names}
    for conv in convs:
        ids = [m.event_id for m in conv.messages]
        bm25 = BM25(ids, [m.text for m in conv.messages])
        baselines: dict[str, Ranking] = {"BM25 over texts": bm25}
        for model, embedder in models.items():
            plain = await embedder.embed([m.text for m in conv.messages])
            named = await embedder.embed([f"{m.sender.title()}: {m.text}" for m in conv.messages])
            qvectors = dict(
                zip(
                    [q.text for q in conv.questions],
                    await embedder.embed([q.text for q in conv.questions]),
                    strict=True,
                )
            )
            dense = Dense(ids, plain, qvectors.__getitem__)
            baselines[f"{model} over texts"] = dense
            baselines[f"{model} over name: text"] = Dense(ids, named, qvectors.__getitem__)
            baselines[f"BM25 + {model} (RRF)"] = fused(bm25, dense)
        for q in conv.questions:
            for mode, name in (("hybrid", names[0]), ("fulltext", names[1]), ("vector", names[2])):
                started = time.perf_counter()
                hits = await memory.search(conv.id, q.text, k=10, mode=mode)  # type: ignore[arg-type]
                took = time.perf_counter() - started
                found = [h.item.event_id or "" for h in hits]
                scores[name].add(q.kind, found, q.evidence, took)
                if mode == "hybrid" and q.kind in misses and recall(found, q.evidence, 5) < 1:
                    show_miss(conv, q, found)
            for name, ranking in baselines.items():
                started = time.perf_counter()
                found = ranking(q.text)
                scores[name].add(q.kind, found, q.evidence, time.perf_counter() - started)
    return scores


def show_miss(conv: Conversation, q: Question, found: Sequence[str]) -> None:
    said = {m.event_id: f"{m.sender}: {m.text}" for m in conv.messages}
    print(f"\n{conv.id} {q.kind}: {q.text}")
    for e in q.evidence:
        print(f"  wanted {'(found) ' if e in found[:5] else ''}{said[e]}")
    for r, e in enumerate(found[:5], start=1):
        print(f"  {r}. {said.get(e, e)}")


def report(scores: dict[str, Scores]) -> None:
    print(
        f"\n{'retriever':<26} {'R@1':>6} {'R@5':>6} {'R@6':>6} {'R@10':>6}  "
        + " ".join(f"{k[:6]:>7}" for k in KINDS)
        + "   ms/query"
    )
    for name, s in scores.items():
        kinds = " ".join(f"{s.at(5, k):7.3f}" for k in KINDS)
        ms = statistics.median(s.seconds) * 1000
        at = " ".join(f"{s.at(k):6.3f}" for k in K)
        print(f"{name:<26} {at}  {kinds}   {ms:7.2f}")
    ours = scores["doryo hybrid (default)"]
    baselines = [n for n in scores if not n.startswith("doryo")]
    models = sorted({n.split(" over ")[0] for n in baselines if " over name" in n})
    families = {"the best baseline": baselines}
    if len(models) > 1:  # and the best of each model's own, BM25 with them
        for model in models:
            families[f"the best {model} baseline"] = [
                n for n in baselines if model in n or n.startswith("BM25 over")
            ]
    for family, names in families.items():
        best = max(names, key=lambda n: scores[n].at(5))
        ratio = ours.at(5) / scores[best].at(5)
        print(f"\nrecall@5, doryo hybrid over {family} ({best}): ×{ratio:.2f}")
        for kind in KINDS:
            best_kind = max(names, key=lambda n: scores[n].at(5, kind))
            ratio = ours.at(5, kind) / max(scores[best_kind].at(5, kind), 1e-9)
            print(f"  {kind:<11} ×{ratio:.2f} over {best_kind}")
    print(
        f"evidence among the {PROMPT} memories an @ask shows the model (agent.memories): "
        f"{ours.at(PROMPT):.3f}"
    )
    full = scores["doryo fulltext"].at(5)
    print(f"hybrid over its full-text half: ×{ours.at(5) / max(full, 1e-9):.2f}")


if __name__ == "__main__":
    asyncio.run(main())
