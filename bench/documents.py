"""Reading documents: how fast, and what it costs the questions asked meanwhile.

    .venv/bin/python bench/documents.py [--rounds 3] [--questions 20]

1. Throughput: a 100-page PDF (about 300 words a page) posted through Synapse's media
   repository, from its arrival in the inbox to its pieces stored (`documents.updated_at`),
   as pages/s; and, apart, its parsing alone (the extraction process, start-up included) and
   the embedding of its pieces.
2. @ask while a large document is read: the overhead around the model (bench/ask.py: arrival →
   model request, model done → answer's last form on Synapse) of questions asked while nothing
   is read, and of questions asked while a 400-page PDF is being read, alternating idle and busy
   stretches in the same run. Target: the p95 does not rise (busy/idle ≤ 1.25 on a shared
   2-core machine, where a second process at nice 19 still takes cache and memory bandwidth).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from ask import TimedModel, overhead, received_at
from harness import line, pct, stack

from bot.documents.reader import extract_apart
from bot.memory.indexer import prepare_text
from bot.memory.text import embedding_text
from tests.documents import filler, pdf
from tests.fakes.llm_script import Answer
from tests.integration.workspace_helpers import new_team, start_session

PDF = "application/pdf"


async def read_through(
    s: Any, person: Any, room: str, name: str, data: bytes
) -> tuple[str, float]:
    """Post a file; (its event, seconds from its arrival to its pieces stored)."""
    event = await person.send_file(room, name, data, PDF)
    while True:
        row = await s.doryo.ctx.db.fetchrow(
            "SELECT status, extract(epoch FROM updated_at) AS at FROM documents "
            "WHERE event_id = $1",
            event,
        )
        if row is not None and row["status"] in ("done", "skipped"):
            break
        await asyncio.sleep(0.05)
    assert row["status"] == "done", dict(row)
    return event, float(row["at"]) - await received_at(s.doryo.ctx.db, event)


async def main(rounds: int, questions: int) -> None:
    documents = {"max_pages": 1000, "progress_pages": 20}
    async with stack(memory=True, model_class=TimedModel, documents=documents) as s:
        assert isinstance(s.model, TimedModel)
        s.model.default = Answer("The benchmark model answers briefly.")
        memory = s.doryo.ctx.memory
        assert memory is not None
        team = await new_team(s.hs, s.doryo, "Bench")
        room = await start_session(team, "Bench")
        session = await s.doryo.ctx.sessions.get(room)
        assert session is not None
        store = s.doryo.ctx.documents.store

        async def status(event: str) -> str | None:
            document = await store.get(session.workspace_id, event)
            return None if document is None else document.status

        for n in range(100):
            await team.alice.send_text(
                room, f"Note {n}: component {n % 17} passed on runner {n % 5}."
            )
        await s.doryo.idle(120)
        await memory.indexer.flush(120)

        # 1. Throughput.
        hundred = [
            pdf([f"Section {r}.{p}. " + filler(300, r * 100 + p) for p in range(100)])
            for r in range(rounds)
        ]
        end_to_end, parsing, embedding = [], [], []
        for r, data in enumerate(hundred):
            _, seconds = await read_through(s, team.alice, room, f"spec-{r}.pdf", data)
            end_to_end.append(100 / seconds)
            started = time.perf_counter()
            extracted = await extract_apart(
                data, "spec.pdf", PDF, max_pages=1000, max_chars=10**8, timeout=600
            )
            parsing.append(100 / (time.perf_counter() - started))
            pieces = [
                embedding_text(p, f"spec.pdf, {sec.place}")
                for sec in extracted.sections
                for p in prepare_text(sec.text, memory.settings)
            ]
            started = time.perf_counter()
            for start in range(0, len(pieces), 16):
                await memory.embedder.embed(pieces[start : start + 16])
            embedding.append(100 / (time.perf_counter() - started))
        kib = len(hundred[0]) // 1024
        print(f"Reading a 100-page PDF ({kib} KiB, {len(pieces)} pieces), {rounds} runs:")
        for name, values in (
            ("end to end (arrival → pieces stored)", end_to_end),
            ("parsing alone (its own process)", parsing),
            ("embedding alone (16 pieces a call)", embedding),
        ):
            runs = ", ".join(f"{v:.1f}" for v in values)
            print(f"  {name:<40} median {statistics.median(values):7.1f} pages/s  ({runs})")

        # 2. @ask while a large document is read, alternating idle and busy stretches.
        big = pdf([f"Chapter {p}. " + filler(300, 7000 + p) for p in range(400)])
        idle_times: list[float] = []
        busy_times: list[float] = []
        per_stretch = max(1, questions // 4)
        n = 0
        while len(busy_times) < questions or len(idle_times) < questions:
            if len(idle_times) < questions:
                for _ in range(per_stretch):
                    before, after = await overhead(
                        s, team.alice, room, f"@ask which runner built component {n % 17}?"
                    )
                    idle_times.append(before + after)
                    n += 1
            if len(busy_times) < questions:
                event = await team.alice.send_file(room, f"big-{n}.pdf", big, PDF)
                while await status(event) in (None, "queued"):  # noqa: ASYNC110 — polls the DB
                    await asyncio.sleep(0.02)
                asked = 0
                while asked < per_stretch and await status(event) == "reading":
                    before, after = await overhead(
                        s, team.alice, room, f"@ask which runner built component {n % 17}?"
                    )
                    # Only questions answered while the reading went on count as busy.
                    if await status(event) == "reading":
                        busy_times.append(before + after)
                        asked += 1
                    n += 1
                await s.doryo.ctx.documents.idle(600)
        print(
            f"@ask overhead around the model, {questions} questions each, alternating stretches:"
        )
        print(line("while nothing is read (baseline)", idle_times))
        print(line("while a 400-page PDF is read", busy_times, idle_times))
        ratio = pct(busy_times, 95) / pct(idle_times, 95)
        print(f"  p95 busy / idle: ×{ratio:.2f}   target ≤ ×1.25")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--questions", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.questions))
