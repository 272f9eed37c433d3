"""Answers to one received event, sent so that handling the event twice sends them once.

Each message gets a transaction ID derived from the event being answered and its position among
the answers (1st, 2nd, …), recorded in `sent_events` once the homeserver accepted it. Handling
the event again (after a crash, or after the homeserver went away mid-send) finds the record and
does not send again. One gap is left by any homeserver: a send it accepted but whose answer never
arrived. For that, a retry first looks for the transaction ID, which every message carries in its
content, among the bot's latest messages in the room.

Threads: a reply to an event that is in a thread goes in that thread. And nothing the bot sends
may start a thread on an event that has a relation of its own (the homeserver refuses it: "Cannot
start threads from an event with a relation"): a message meant to start a thread under such an
event goes in the event's thread if it is in one, or becomes a plain reply.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Any

import asyncpg

from appservice.errors import MatrixRequestError
from appservice.matrix import JSON, MatrixAPI, has_relation, markdown_content, thread_of

log = logging.getLogger(__name__)

TXN_KEY = "org.doryo.txn_id"
_LOOKBACK = 100

_ROOTS: dict[tuple[str, str], str | None] = {}
"""(room, event) → the thread root a message under that event belongs to: the event itself, the
root of the thread it is in, or None (it cannot have a thread). Relations never change."""
_ROOTS_KEPT = 10_000


async def thread_safely(matrix: MatrixAPI, room_id: str, content: JSON) -> None:
    """Point a thread relation at a real thread root (see the module's docstring)."""
    relates = content.get("m.relates_to")
    if not isinstance(relates, dict) or relates.get("rel_type") != "m.thread":
        return
    wanted = str(relates.get("event_id"))
    root = await thread_root_for(matrix, room_id, wanted)
    if root is None:
        content["m.relates_to"] = {"m.in_reply_to": relates.get("m.in_reply_to")}
    elif root != wanted:
        content["m.relates_to"] = {**relates, "event_id": root}


async def thread_root_for(matrix: MatrixAPI, room_id: str, event_id: str) -> str | None:
    """The root of the thread a message under `event_id` belongs to: the event itself, the
    root of the thread it is in, or None if it cannot have a thread (it has a relation)."""
    if (room_id, event_id) in _ROOTS:
        return _ROOTS[(room_id, event_id)]
    try:
        content = (await matrix.get_event(room_id, event_id)).get("content")
    except MatrixRequestError as e:
        log.info("cannot see %s (%s): replying to it outside a thread", event_id, e)
        return None
    root = thread_of(content) or (None if has_relation(content) else event_id)
    _remember_root(room_id, event_id, root)
    return root


def _remember_root(room_id: str, event_id: str, root: str | None) -> None:
    if len(_ROOTS) >= _ROOTS_KEPT:
        _ROOTS.pop(next(iter(_ROOTS)))
    _ROOTS[(room_id, event_id)] = root


class SentEventStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, txn_id: str) -> str | None:
        event_id = await self._pool.fetchval(
            "SELECT event_id FROM sent_events WHERE txn_id = $1", txn_id
        )
        return str(event_id) if event_id is not None else None

    async def record(self, txn_id: str, room_id: str, event_id: str) -> None:
        await self._pool.execute(
            """
            INSERT INTO sent_events (txn_id, room_id, event_id) VALUES ($1, $2, $3)
            ON CONFLICT (txn_id) DO NOTHING
            """,
            txn_id,
            room_id,
            event_id,
        )

    async def prune(self, older_than: timedelta) -> None:
        await self._pool.execute(
            "DELETE FROM sent_events WHERE sent_at < now() - $1::interval", older_than
        )


class Replier:
    def __init__(
        self,
        matrix: MatrixAPI,
        sent: SentEventStore,
        room_id: str,
        event_id: str,
        *,
        retried: bool = False,
        content: JSON | None = None,
        purpose: str = "",
    ) -> None:
        """`content`: the answered event's, when at hand (its thread, without asking).
        `purpose`: what else answers the same event apart from its handling (the reading of
        a shared file): its messages get transaction IDs of their own."""
        self.matrix = matrix
        self.room_id = room_id
        self.event_id = event_id
        self.thread_root = thread_of(content)
        """The thread the answered event is in: the bot's replies go in it too."""
        if content is not None:
            root = self.thread_root or (None if has_relation(content) else event_id)
            _remember_root(room_id, event_id, root)
        self._sent = sent
        self._retried = retried
        key = f"{purpose}:{event_id}" if purpose else event_id
        self._digest = hashlib.sha256(key.encode()).hexdigest()[:24]
        self._count = 0
        self.replying: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext
        """Around each message sent to the answered event's room (`Busy.replying`)."""

    def next_txn_id(self) -> str:
        self._count += 1
        return f"doryo.r.{self._digest}.{self._count}"

    async def send(
        self, content: JSON, event_type: str = "m.room.message", *, room_id: str | None = None
    ) -> str:
        """Send once; `room_id` sends to another room than the one being answered."""
        event_id, _ = await self.send_tracked(content, event_type, room_id=room_id)
        return event_id

    async def send_tracked(
        self, content: JSON, event_type: str = "m.room.message", *, room_id: str | None = None
    ) -> tuple[str, bool]:
        """Send once: (the event, whether it was sent now rather than found sent before, by an
        earlier handling of the same event — with the content that handling had)."""
        room_id = room_id or self.room_id
        txn_id = self.next_txn_id()
        if (known := await self._sent.get(txn_id)) is not None:
            return known, False
        content = {**content, TXN_KEY: txn_id}
        await self._thread_safely(room_id, content)
        event_id = await self._find_sent(room_id, txn_id) if self._retried else None
        new = event_id is None
        if event_id is None:
            with self.replying() if room_id == self.room_id else contextlib.nullcontext():
                event_id = await self.matrix.send_event(room_id, event_type, content, txn_id)
        await self._sent.record(txn_id, room_id, event_id)
        return event_id, new

    async def _thread_safely(self, room_id: str, content: JSON) -> None:
        await thread_safely(self.matrix, room_id, content)

    async def send_near(self, markdown: str, event_id: str, **kwargs: Any) -> str:
        """A notice next to `event_id`, seen where it is: in its thread if it is in one,
        otherwise as a reply in the timeline (never a new thread under it, where it would hide
        behind a thread summary)."""
        root = await thread_root_for(self.matrix, self.room_id, event_id)
        thread = (
            {"thread_root": root, "falling_back": False} if root not in (None, event_id) else {}
        )
        content = markdown_content(markdown, notice=True, reply_to=event_id, **thread, **kwargs)
        return await self.send(content)

    async def _find_sent(self, room_id: str, txn_id: str) -> str | None:
        """The event the homeserver made of this transaction before its answer was lost."""
        page = await self.matrix.messages(
            room_id, limit=_LOOKBACK, event_filter={"senders": [self.matrix.user_id]}
        )
        for event in page.get("chunk", []):
            if event.get("content", {}).get(TXN_KEY) == txn_id:
                log.info("%s was sent before its answer was lost; not sending it again", txn_id)
                return str(event["event_id"])
        return None

    async def send_notice(
        self,
        markdown: str,
        *,
        reply_to: str | None = "",
        room_id: str | None = None,
        **kwargs: Any,
    ) -> str:
        """An m.notice, by default as a reply to the event being answered ("" = that event; in
        its thread if it is in one)."""
        target = self.event_id if reply_to == "" else reply_to
        content = markdown_content(
            markdown, notice=True, reply_to=target, **self._in_thread(target, room_id, kwargs)
        )
        return await self.send(content, room_id=room_id)

    async def send_text(self, markdown: str, *, reply_to: str | None = "", **kwargs: Any) -> str:
        target = self.event_id if reply_to == "" else reply_to
        content = markdown_content(
            markdown, reply_to=target, **self._in_thread(target, None, kwargs)
        )
        return await self.send(content)

    def _in_thread(
        self, target: str | None, room_id: str | None, kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        """A reply to the answered event, in its room, goes in its thread."""
        if (
            target == self.event_id
            and self.thread_root is not None
            and room_id in (None, self.room_id)
            and "thread_root" not in kwargs
        ):
            return {**kwargs, "thread_root": self.thread_root, "falling_back": False}
        return kwargs
