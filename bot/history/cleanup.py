"""Memory holds what the team said, not its conversation with the bot. Until schema 10, questions
to the bot (`@ask …`, "Doryo: …") and the agent's answers were stored as memories: they outranked
the facts they were about. This removes them once, in the background, in bounded batches (each
a short transaction), walking the memory's messages by ID so that it can stop and go on.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bot.history.recorder import to_the_bot

if TYPE_CHECKING:
    from bot.context import Context

log = logging.getLogger(__name__)

NAME = "memory: forget the conversation with the bot"
BATCH = 500


async def forget_conversation_with_bot(ctx: Context, batch: int = BATCH) -> int:
    """Delete the memories made of messages to the bot, and of its answers unless
    memory.keep_answers; returns how many (0 once done)."""
    db = ctx.db
    if await db.fetchval("SELECT 1 FROM maintenance_done WHERE name = $1", NAME):
        return 0
    last, removed = 0, 0
    while True:
        rows = await db.fetch(
            """
            SELECT m.id, h.kind, h.body FROM memory_items m
            JOIN messages h ON h.event_id = m.event_id
            WHERE m.kind = 'message' AND m.id > $1
            ORDER BY m.id LIMIT $2
            """,
            last,
            batch,
        )
        if not rows:
            break
        last = rows[-1]["id"]
        doomed = [
            r["id"]
            for r in rows
            if (r["kind"] == "agent" and not ctx.config.memory.keep_answers)
            or r["kind"] == "system"
            or (r["body"] is not None and to_the_bot({"body": r["body"]}, ctx))
        ]
        if doomed:
            await db.execute("DELETE FROM memory_items WHERE id = any($1::bigint[])", doomed)
            removed += len(doomed)
    await db.execute(
        "INSERT INTO maintenance_done (name) VALUES ($1) ON CONFLICT DO NOTHING", NAME
    )
    if removed:
        log.info("memory: forgot %d questions to the bot and answers of it", removed)
    return removed
