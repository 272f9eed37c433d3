"""Questions recognised as their transaction arrives, their embedding started at once.

The question's vector is what @ask waits for longest before it can ask the model; started when
the event is handled, it also waits out the unpacking, the history and the parsing before it.
Seen here, as soon as the transaction is journaled, it is on its way meanwhile, and `ask` takes
it up (`take`) if the question it handles is the one seen.

Only what the pure router and parser tell from the event alone is recognised: `@ask …`,
`!ask …`, a mention of the bot. An @ask that only a DM or a reply makes one is embedded when
handled, as before. A question seen but never asked (its session ended, no workspace) costs one
embedding; it is dropped after `keep` seconds, and no more than `limit` wait at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.commands.parser import Addressing, Ask, Command, parse
from bot.core.router import Message, RouterRules, route
from bot.memory import Memory
from bot.memory.embeddings import Vectors


@dataclass(frozen=True, slots=True)
class _Seen:
    question: str
    embedding: asyncio.Task[Vectors]
    at: float


def question_of(
    event: Mapping[str, Any], rules: RouterRules, addressing: Addressing
) -> str | None:
    """The question of an @ask the event makes to the bot wherever it is sent, else None."""
    if not isinstance(route(event, rules, now_ms=time.time_ns() // 1_000_000), Message):
        return None
    request = parse(event["content"], addressing)
    if isinstance(request, Ask):
        question = request.question
    elif isinstance(request, Command) and request.name == "ask":
        question = request.text
    else:
        return None
    return question.strip() or None


class EarlyQuestions:
    def __init__(
        self,
        memory: Memory,
        rules: RouterRules,
        addressing: Addressing,
        *,
        limit: int = 16,
        keep: float = 60.0,
    ) -> None:
        self._memory = memory
        self._rules = rules
        self._addressing = addressing
        self._limit = limit
        self._keep = keep
        self._seen: dict[str, _Seen] = {}

    def see(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Start embedding the questions among a newly journaled transaction's events."""
        self._drop_stale()
        for event in events:
            if len(self._seen) >= self._limit:
                return  # a burst of questions: the rest are embedded when handled
            question = question_of(event, self._rules, self._addressing)
            if question is not None and event["event_id"] not in self._seen:
                embedding = self._memory.embed_soon(question)
                self._seen[event["event_id"]] = _Seen(question, embedding, time.monotonic())

    def take(self, event_id: str, question: str) -> asyncio.Task[Vectors] | None:
        """The embedding of `question` if it was started when event `event_id` arrived."""
        seen = self._seen.pop(event_id, None)
        if seen is None:
            return None
        if seen.question != question.strip():
            seen.embedding.cancel()
            return None
        return seen.embedding

    def close(self) -> None:
        for seen in self._seen.values():
            seen.embedding.cancel()
        self._seen.clear()

    def _drop_stale(self) -> None:
        oldest = time.monotonic() - self._keep
        for event_id, seen in list(self._seen.items()):
            if seen.at < oldest:
                seen.embedding.cancel()
                del self._seen[event_id]
