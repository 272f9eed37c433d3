"""An answer the model has finished, kept until it is posted for sure: an @ask handled again
(the homeserver went away before the answer's last edit, or the bot crashed there) posts the
stored answer instead of asking the model again — paying for it twice, and perhaps answering
differently in the same message.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from bot.agent.answer import Source

KEPT = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class Finished:
    text: str
    model: str | None
    notes: tuple[str, ...]
    sources: tuple[Source, ...]
    shown: tuple[str, ...] = ()
    """The memories' events the model was shown."""


def _source(raw: dict[str, Any]) -> Source:
    said = raw.get("said_at")
    return Source(**{**raw, "said_at": datetime.fromisoformat(said) if said else None})


async def load(db: asyncpg.Pool, question_event: str) -> Finished | None:
    row = await db.fetchrow(
        "SELECT text, model, notes::text, sources::text, shown::text FROM finished_answers "
        "WHERE question_event = $1",
        question_event,
    )
    if row is None:
        return None
    return Finished(
        row["text"],
        row["model"],
        tuple(json.loads(row["notes"])),
        tuple(_source(s) for s in json.loads(row["sources"])),
        tuple(json.loads(row["shown"])),
    )


async def save(db: asyncpg.Pool, question_event: str, room_id: str, done: Finished) -> None:
    sources = [
        {**asdict(s), "said_at": s.said_at.isoformat() if s.said_at else None}
        for s in done.sources
    ]
    await db.execute(
        """
        INSERT INTO finished_answers (question_event, room_id, text, model, notes, sources,
                                      shown)
        VALUES ($1, $2, $3, $4, $5::text::jsonb, $6::text::jsonb, $7::text::jsonb)
        ON CONFLICT (question_event) DO NOTHING
        """,
        question_event,
        room_id,
        done.text,
        done.model,
        json.dumps(list(done.notes)),
        json.dumps(sources),
        json.dumps(list(done.shown)),
    )


async def prune(db: asyncpg.Pool) -> None:
    await db.execute("DELETE FROM finished_answers WHERE finished_at < now() - $1::interval", KEPT)
