"""What @ask adds around the model (issue 5: < 50 ms), next to !ping in the same run.

    .venv/bin/python bench/ask.py [--rounds 40]

The model is a fake on 127.0.0.1 that notes when a request arrives and when its streamed answer
ends. For each @ask in a session with a few hundred remembered messages:
    overhead = (question received → request at the model) + (model done → answer's final form
               accepted by Synapse)
i.e. everything but the model: memory search (embedding the question, hybrid query), history,
blueprint, posting the answer and its last edit. Baseline: !ping, received → pong accepted by
Synapse (one plain answer).

`--first-token S`: the model takes S seconds to its first token, as a hosted model does (a few
hundred ms). An answer the model finishes within the edit interval (0.5 s) is posted whole,
once; a slower one starts as "…" and is edited.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from aiohttp import web
from harness import line, stack

from tests.fakes.llm_script import Answer
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.agent_helpers import ANSWER_KEY, final_answer
from tests.integration.workspace_helpers import new_team, start_session


class TimedModel(FakeOpenAI):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.windows: list[tuple[float, float]] = []

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        started = time.time()
        response = await super()._chat(request)
        self.windows.append((started, time.time()))
        return response


async def received_at(stack_db: Any, event_id: str) -> float:
    value = await stack_db.fetchval(
        "SELECT extract(epoch FROM received_at) FROM inbox_events WHERE event_id = $1", event_id
    )
    return float(value)


async def overhead(s: Any, person: Any, room: str, text: str) -> tuple[float, float]:
    """One @ask: (ms from its arrival to the model's request, ms from the model's last token to
    the answer's final form on the homeserver)."""
    model = s.model
    question = await person.send_text(room, text)
    before = len(model.windows)
    answer, final = await final_answer(person, room, question)
    # The answer ends done in its last edit, or, posted whole, in itself.
    done = [
        e
        for e in [answer, *person.timeline[room]]
        if e["event_id"] == answer["event_id"]
        or e.get("content", {}).get("m.relates_to", {}).get("event_id") == answer["event_id"]
    ]
    done_at = [
        e["origin_server_ts"]
        for e in done
        if e["content"].get("m.new_content", e["content"]).get(ANSWER_KEY, {}).get("status")
        == "done"
    ]
    if not done_at:
        raise SystemExit(f"the answer did not end done: {final}")
    got = await received_at(s.doryo.ctx.db, question)
    model_start, model_end = model.windows[before][0], model.windows[-1][1]
    return (model_start - got) * 1000, (max(done_at) / 1000 - model_end) * 1000


async def main(rounds: int, first_token: float) -> None:
    # Limits high enough for the run, but on: their check in Redis is part of every @ask.
    limits = {"requests_per_minute": 100_000, "tokens_per_minute": 100_000_000}
    rate_limits = {scope: limits for scope in ("agent", "workspace", "user")}
    async with stack(memory=True, model_class=TimedModel, llm={"rate_limits": rate_limits}) as s:
        model = s.model
        assert isinstance(model, TimedModel)
        model.default = Answer("The benchmark model answers briefly.", first_delay=first_token)
        team = await new_team(s.hs, s.doryo, "Bench")
        room = await start_session(team, "Bench")
        for n in range(300):
            await team.alice.send_text(
                room,
                f"Note {n}: the build of component {n % 17} "
                f"passed on runner {n % 5} after {n % 9} retries.",
            )
        await s.doryo.idle(120)
        assert s.doryo.ctx.memory is not None
        await s.doryo.ctx.memory.indexer.flush(120)

        ping, ask = [], []
        parts: list[tuple[float, float]] = []
        for n in range(rounds + 3):
            event = await team.alice.send_text(room, "!ping")
            pong = await team.alice.wait_for_reply(room, event)
            if n >= 3:
                ping.append(
                    (pong["origin_server_ts"] / 1000 - await received_at(s.doryo.ctx.db, event))
                    * 1000
                )

            before_model, after_model = await overhead(
                s, team.alice, room, f"@ask which runner built component {n % 17}?"
            )
            if n >= 3:
                ask.append(before_model + after_model)
                parts.append((before_model, after_model))
        print(
            f"@ask overhead around the model ({rounds} questions, 300 messages remembered, "
            f"model's first token after {first_token * 1000:.0f} ms)"
        )
        print(line("!ping: received → pong (baseline)", ping))
        print(line("@ask: all but the model", ask, ping))
        print(line("  of which before the model", [b for b, _ in parts]))
        print(line("  of which after the model", [a for _, a in parts]))
        print("  target: @ask overhead < 50 ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--first-token", type=float, default=0.0, metavar="SECONDS")
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.first_token))
