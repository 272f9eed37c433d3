"""Memory made to agree with the history, at start.

- `forget_redacted`: a redaction is applied to the history while the event is handled, and to
  memory by the indexer's queue, later: a crash in between lost the memory's deletion, and the
  redacted text stayed. At start, every memory of a message redacted in the last week (what the
  inbox could replay) is deleted again, with what was derived from it.
- `forget_conversation_with_bot`: until schema 10, questions to the bot (`@ask …`, "Doryo: …")
  and the agent's answers were stored as memories: they outranked the facts they were about.
  This removes them once, in the background, in bounded batches (each a short transaction),
  walking the memory's messages by ID.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from bot.history.recorder import to_the_bot

if TYPE_CHECKING:
    from bot.context import Context

log = logging.getLogger(__name__)

NAME = "memory: forget the conversation with the bot"
REDACTIONS_REPLAYED = timedelta(days=7)


async def forget_redacted(ctx: Context, since: timedelta = REDACTIONS_REPLAYED) -> int:
    """Delete the memories of messages redacted in the last `since` (and those derived from
    them); returns how many there were (0 unless a deletion was lost)."""
    removed = 0
    for match in ("m.event_id = h.event_id", "m.source_event_ids && ARRAY[h.event_id]"):
        status = await ctx.db.execute(
            f"""
            DELETE FROM memory_items m
            USING messages h JOIN sessions s ON s.room_id = h.room_id
            WHERE h.redacted_at > now() - $1::interval
              AND m.workspace_id = s.workspace_id AND {match}
            """,
            since,
        )
        removed += int(status.split()[-1])
    if removed:
        log.warning("memory: %d memories of redacted messages were left; deleted now", removed)
    return removed


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
