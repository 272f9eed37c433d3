"""From the host's ✅ reaching Synapse to the tool's executor starting (issue 6: p95 < 100 ms).

    .venv/bin/python bench/actions.py [--rounds 50]

Each round proposes an action (`@act bench_mark label=…`), then the host reacts ✅ on its card.
The reaction's origin_server_ts is when Synapse accepted it; a tool registered for the benchmark
notes when it starts. Split into the part Synapse takes to push the reaction to the appservice
(the transport, the floor any appservice pays) and the part the bot takes.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from harness import line, stack
from pydantic import BaseModel

from bot.tools.registry import Tool, ToolCall, ToolResult
from tests.integration.test_actions import propose, react
from tests.integration.workspace_helpers import command, new_team, start_session
from tests.poll import eventually


class _Args(BaseModel):
    label: str


async def _has(started: dict[str, float], label: str) -> bool:
    return label in started


async def main(rounds: int) -> None:
    async with stack() as s:
        started: dict[str, float] = {}

        async def mark(call: ToolCall, args: _Args) -> ToolResult:
            started[args.label] = time.time()
            return ToolResult(summary="marked")

        s.doryo.ctx.tools.register(Tool("bench_mark", "1", "Notes when it starts", _Args, mark))
        await s.doryo.ctx.blueprints.create(
            {"code": "bench", "name": "Bench", "extends": "assistant", "tools": ["bench_mark"]}
        )
        team = await new_team(s.hs, s.doryo, "Bench")
        await command(team.alice, team.dm, "!ws settings agent bench")
        room = await start_session(team, "Bench")
        total, transport, bot = [], [], []
        for n in range(rounds + 3):
            label = f"r{n}"
            card = await propose(team.alice, room, f"@act bench_mark label={label}")
            await s.doryo.idle(30)
            reaction = await react(team.alice, room, card["event_id"], "✅")
            await eventually(lambda label=label: _has(started, label), timeout=30)
            event = await team.alice.request("GET", f"/v3/rooms/{room}/event/{reaction}")
            accepted = event["origin_server_ts"] / 1000
            received = await s.doryo.ctx.db.fetchval(
                "SELECT extract(epoch FROM received_at) FROM inbox_events WHERE event_id = $1",
                reaction,
            )
            if n < 3:
                continue  # warm-up: connections, caches, the first card
            total.append((started[label] - accepted) * 1000)
            transport.append((float(received) - accepted) * 1000)
            bot.append((started[label] - float(received)) * 1000)
        print(f"Host's ✅ accepted by Synapse → executor starts ({rounds} actions)")
        print(line("total", total))
        print(line("Synapse → appservice (transport)", transport))
        print(line("bot: received → executor starts", bot, transport))
        print("  target: total p95 < 100 ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=50)
    asyncio.run(main(parser.parse_args().rounds))
