"""The cost of end-to-end encryption: `!ping` round trip and `@ask` time to first token, in
an encrypted session and a plain one of the same workspace, alternating, in the same run, with
the same client (matrix-nio with encryption on, as Element is: it encrypts and decrypts on its
side too).

Two views: end to end (the person's send → the bot's message seen and decrypted in their sync),
and the bot's own part (the event's arrival in the inbox → the bot's message on the homeserver,
origin_server_ts), where decrypting the question and encrypting the answer are all that differ.
Target: < 15 % added.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import line, stack

from tests.encrypted_client import EncryptedUser
from tests.fakes.llm_script import Answer

ENCRYPTION = {
    "enabled": True,
    "pickle_key": "a pickle key for the benchmark",
    "cross_signing_seed": "a cross-signing seed for the benchmark, long",
}
ANSWER_KEY = "org.doryo.answer"


async def received_at(db: Any, event_id: str) -> float:
    value = await db.fetchval(
        "SELECT extract(epoch FROM received_at) FROM inbox_events WHERE event_id = $1", event_id
    )
    return float(value)


def answer_to(user: EncryptedUser, room_id: str, event_id: str, bot_id: str) -> Any:
    """The bot's first message answering `event_id` (a reply, or an answer in its thread)."""
    for event in user.in_room(room_id):
        if getattr(event, "sender", None) != bot_id:
            continue
        relates = event.source.get("content", {}).get("m.relates_to") or {}
        if (relates.get("m.in_reply_to") or {}).get("event_id") == event_id or (
            relates.get("rel_type") == "m.thread" and relates.get("event_id") == event_id
        ):
            return event
    return None


async def round_trip(
    user: EncryptedUser, room_id: str, text: str, bot_id: str, db: Any
) -> tuple[float, float]:
    """(end to end ms, the bot's part ms) for one message and the bot's first answer to it."""
    started = time.monotonic()
    event_id = await user.send(room_id, text)
    answer = await user.until(lambda _: answer_to(user, room_id, event_id, bot_id), timeout=60)
    total = (time.monotonic() - started) * 1000
    bot_part = (answer.server_timestamp / 1000 - await received_at(db, event_id)) * 1000
    return total, bot_part


async def command(user: EncryptedUser, room_id: str, text: str, bot_id: str, db: Any) -> str:
    event_id = await user.send(room_id, text)
    answer = await user.until(lambda _: answer_to(user, room_id, event_id, bot_id), timeout=60)
    return str(answer.body)


async def main(rounds: int, workers: int) -> None:
    async with stack(encryption=ENCRYPTION, workers=workers) as s:
        s.model.default = Answer("The benchmark model answers briefly.")
        bot_id = s.config.bot_user_id
        with tempfile.TemporaryDirectory(prefix="doryo-bench-nio-") as store:
            alice = await EncryptedUser.register(s.hs.synapse, Path(store), "alice")
            # A workspace (made in an encrypted DM) with a plain session and an encrypted one:
            # @ask answers in sessions only.
            dm = await alice.create_room(is_direct=True, invite=[bot_id])
            await alice.wait_joined(dm, bot_id)
            rooms = {}
            await command(alice, dm, "!ws create Bench", bot_id, s.doryo.ctx.db)
            workspace = (await s.doryo.ctx.workspaces.of_member(alice.user_id))[0]
            await alice.client.join(workspace.space_id)
            for kind in ("plain", "encrypted"):
                if kind == "encrypted":
                    await command(alice, dm, "!ws settings encrypted on", bot_id, s.doryo.ctx.db)
                answer = await command(alice, dm, f"!session start {kind}", bot_id, s.doryo.ctx.db)
                room_id = re.search(r"matrix\.to/#/(![^?\s)]+)", answer)[1]  # type: ignore[index]
                await alice.client.join(room_id)
                await alice.step()
                assert alice.client.rooms[room_id].encrypted == (kind == "encrypted")
                rooms[kind] = room_id
            results: dict[tuple[str, str], list[tuple[float, float]]] = {}
            for n in range(rounds + 3):
                order = ("plain", "encrypted") if n % 2 == 0 else ("encrypted", "plain")
                for kind in order:
                    for what, text in (("ping", "!ping"), ("ask", f"@ask question {n}?")):
                        timing = await round_trip(alice, rooms[kind], text, bot_id, s.doryo.ctx.db)
                        if n >= 3:  # warm-up: sessions shared, caches filled
                            results.setdefault((what, kind), []).append(timing)
                await s.idle(30)
            await alice.close()

        where = f"a receiver and {workers} worker(s)" if workers else "one process (role all)"
        print(f"Encrypted vs plain session, {rounds} rounds each, alternating; {where}")
        for what, label in (("ping", "!ping round trip"), ("ask", "@ask to first answer")):
            for view, index in (("end to end", 0), ("the bot's part", 1)):
                plain = [t[index] for t in results[(what, "plain")]]
                encrypted = [t[index] for t in results[(what, "encrypted")]]
                print(line(f"{label}, {view}, plain", plain))
                print(line(f"{label}, {view}, encrypted", encrypted, plain))
                added = statistics.median(encrypted) / statistics.median(plain) - 1
                print(f"    encryption adds {added * 100:+.1f} % at p50 (target < 15 %)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="run a receiver (which keeps the device) and this many workers (which use it)",
    )
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.workers))
