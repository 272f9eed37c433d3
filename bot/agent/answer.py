"""An answer as it streams (docs/spec.md §3): one m.text, in a thread under the question (or a
plain reply), edited at most every `edit_interval` seconds while the model writes, ending with
status `done` (or `error`) and links to its sources. It never stays `streaming`: whatever stops
the answer, its last form says how it ended.

The message is posted when there is something to show: the model's first text, "…" if the
model has written nothing one interval after the answer started, or the whole answer if it
came sooner (then it is one message, status `done`, with no edits): posting a placeholder first
would make the last edit wait for the homeserver to take it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from appservice.errors import MatrixRequestError
from appservice.matrix import JSON, MatrixAPI, edit_content, markdown_content
from bot.agent.prompt import display_name
from bot.commands.outputs import inline
from bot.core import strings
from bot.core.replies import Replier
from bot.core.tasks import outcome_seen

log = logging.getLogger(__name__)

ANSWER_KEY = "org.doryo.answer"
CURSOR = " ▍"
EDIT_BYTES = 60_000
"""What an edit of the answer may weigh: the homeserver refuses an event over 65,536 bytes, and
an edit carries the text four times (body and HTML, each in the edit and its m.new_content)."""


@dataclass(frozen=True, slots=True)
class Source:
    """An item an answer drew on, under the number the model was shown it by."""

    number: int
    room_id: str
    event_id: str
    sender: str | None = None
    said_at: datetime | None = None
    text: str | None = None
    place: str | None = None
    """A document's name and place in it ("spec.pdf, p. 4")."""

    def line(self, default_room: str, domain: str) -> str:
        """`- [2] dana, 2 Dec: “We launch on March 3rd…”`, the number linking to the event;
        a document's piece: `- [3] spec.pdf, p. 4 — dana, 2 Dec: “…”`."""
        link = event_link(self.room_id or default_room, self.event_id, domain)
        parts = []
        if self.sender:
            parts.append(inline(display_name(self.sender), 60))
        if self.said_at:
            parts.append(
                f"{self.said_at.day} {self.said_at:%b %Y}".removesuffix(
                    f" {datetime.now(UTC).year}"
                )
            )
        about = ", ".join(parts)
        if self.place:
            about = f"**{inline(self.place, 90)}**" + (f" — {about}" if about else "")
        quote = f"“{inline(self.text, 90)}”" if self.text else ""
        return f"- [[{self.number}]]({link}) {about}{': ' if about and quote else ''}{quote}"


def _edit_size(content: JSON) -> int:
    return len(json.dumps(edit_content("$" + "x" * 43, content)).encode())


def without_sources(body: str) -> str:
    """An answer's text without the sources line the bot adds under it."""
    text, _, _ = body.partition(f"\n\n{strings.ANSWER_SOURCES}")
    return text.strip()


def latest_body(event: JSON) -> str | None:
    """The text of an event after its latest edit, as the homeserver bundles it."""
    unsigned = event.get("unsigned")
    relations = unsigned.get("m.relations") if isinstance(unsigned, dict) else None
    replaced = relations.get("m.replace") if isinstance(relations, dict) else None
    content = replaced.get("content") if isinstance(replaced, dict) else None
    new = content.get("m.new_content") if isinstance(content, dict) else None
    body = new.get("body") if isinstance(new, dict) else None
    return body if isinstance(body, str) else None


def event_link(room_id: str, event_id: str, domain: str) -> str:
    return f"https://matrix.to/#/{room_id}/{event_id}?via={domain}"


class Answer:
    def __init__(
        self,
        matrix: MatrixAPI,
        reply: Replier,
        room_id: str,
        question_event: str,
        *,
        threaded: bool,
        domain: str,
        edit_interval: float,
        thread_root: str | None = None,
    ) -> None:
        """`thread_root`: the thread the answer goes in (threaded answers), if not the
        question's: a Letta agent's continuation goes in the thread of the card it waited on."""
        self._matrix = matrix
        self._reply = reply
        self._room_id = room_id
        self._question = question_event
        self._threaded = threaded
        self._thread_root = thread_root or question_event
        self._domain = domain
        self._interval = edit_interval
        self.event_id: str | None = None
        self.text = ""
        self.model: str | None = None
        self.sources: list[str] = []
        self.shown: list[str] = []
        """The events of the memories the model was shown (the sources are those it used)."""
        self._edits = 0
        self._last_edit = 0.0
        self.finished = False
        self._posting: asyncio.Future[None] | None = None
        self._placeholder: asyncio.TimerHandle | None = None
        self._run = uuid.uuid4().hex[:8]
        """Edits' transaction IDs are this run's own: after a crash, a rerun's edits would
        otherwise reuse the crashed run's IDs, which the homeserver discards as duplicates (and
        with them, perhaps, the final `done`)."""

    def _content(self, body: str, status: str) -> JSON:
        content = self._content_of(body, status)
        if _edit_size(content) <= EDIT_BYTES:
            return content
        # Too long for one Matrix message: cut, and say so (the sources stay).
        text, sources = body, ""
        if f"\n\n{strings.ANSWER_SOURCES}" in body:
            text, _, rest = body.partition(f"\n\n{strings.ANSWER_SOURCES}")
            sources = f"\n\n{strings.ANSWER_SOURCES}{rest}"
        while len(text) > 100:
            text = text[: len(text) * 4 // 5]
            content = self._content_of(f"{text}…\n\n_{strings.ANSWER_CUT}_{sources}", status)
            if _edit_size(content) <= EDIT_BYTES:
                return content
        return self._content_of(f"_{strings.ANSWER_CUT}_", status)

    def _content_of(self, body: str, status: str) -> JSON:
        if self._threaded:
            # In the thread (a reply to the question for clients without threads).
            content = markdown_content(
                body, thread_root=self._thread_root, reply_to=self._question, falling_back=True
            )
        else:
            content = markdown_content(body, reply_to=self._question)
        content[ANSWER_KEY] = {
            "question": self._question,
            "status": status,
            "model": self.model,
            "sources": list(self.sources),
            "shown": list(self.shown),
        }
        return content

    def start(self) -> None:
        """The model is at work: "…" is posted one interval from now unless there is more to
        show by then (once)."""
        if self._placeholder is not None or self._posting is not None:
            return
        self._last_edit = time.monotonic()
        self._placeholder = asyncio.get_running_loop().call_later(
            self._interval, self._post_soon, strings.ANSWER_THINKING, "streaming"
        )

    def close(self) -> None:
        """No "…" from now on (the caller is done with this answer, or gives up on it for now:
        a placeholder nobody will edit would stay `streaming`)."""
        if self._placeholder is not None:
            self._placeholder.cancel()

    def _post_soon(self, body: str, status: str) -> None:
        if self._posting is None:
            self._posting = asyncio.ensure_future(self._post(body, status))
            self._posting.add_done_callback(outcome_seen)  # raised where the answer goes on

    async def _post(self, body: str, status: str) -> None:
        content = self._content(body, status)
        self.event_id, new = await self._reply.send_tracked(content)
        if not new:
            # Posted by an earlier run of this answer (before a crash), with what it had then.
            self._edits += 1
            txn_id = f"{self._reply.next_txn_id()}.e{self._edits}.{self._run}"
            await self._matrix.edit(self._room_id, self.event_id, content, txn_id=txn_id)

    async def posted(self) -> bool:
        """Wait for the message to be posted; False if it is not (yet) or that failed."""
        if self._posting is None:
            return False
        try:
            await self._posting
        except Exception as e:
            log.warning("could not post the answer: %s", e)
            return False
        return self.event_id is not None

    async def _show(self, body: str, status: str) -> None:
        """Post the answer with this body, or edit it to this body once it is posted."""
        self.close()
        if self._posting is None:
            self._post_soon(body, status)
            assert self._posting is not None
            await self._posting  # its failure (homeserver away) is the caller's to handle
        else:
            await self._posting
            assert self.event_id is not None
            self._edits += 1
            txn_id = f"{self._reply.next_txn_id()}.e{self._edits}.{self._run}"
            content: dict[str, Any] = self._content(body, status)
            with self._reply.replying():
                await self._matrix.edit(self._room_id, self.event_id, content, txn_id=txn_id)
        self._last_edit = time.monotonic()

    async def append(self, delta: str) -> None:
        """More text from the model: shown at the next allowed edit."""
        self.text += delta
        if time.monotonic() - self._last_edit >= self._interval and self.text.strip():
            await self._show(self.text + CURSOR, "streaming")

    def _with_sources(self, body: str, sources: Sequence[Source]) -> str:
        if not sources:
            return body
        lines = [s.line(self._room_id, self._domain) for s in sources]
        return "\n".join([body, "", strings.ANSWER_SOURCES, *lines])

    async def finish(
        self,
        *,
        model: str | None,
        sources: Sequence[Source] = (),
        text: str | None = None,
        notes: Sequence[str] = (),
    ) -> None:
        """The last edit: status done, the full text, notes (fallbacks, budgets), sources."""
        self.model = model
        self.sources = [s.event_id for s in sources]
        body = (text if text is not None else self.text).strip() or strings.ANSWER_EMPTY
        if notes:
            body += "\n\n" + " ".join(f"_{note}_" for note in notes)
        try:
            await self._show(self._with_sources(body, sources), "done")
        except MatrixRequestError as e:
            # The homeserver refused the last edit (not "unreachable": then the whole answer is
            # tried again): a short one, so that the answer does not stay `streaming`.
            log.warning("the final edit of the answer to %s was refused: %s", self._question, e)
            await self._show(strings.ANSWER_NOT_SHOWN.format(error=e.errcode), "error")
        self.finished = True

    async def fail(self, reason: str) -> None:
        """The last edit: status error, with what was written so far and why it stopped (or,
        if nothing was posted yet, the answer itself)."""
        if self.finished:
            return
        body = (self.text.strip() + "\n\n" if self.text.strip() else "") + f"⚠️ {reason}"
        try:
            if self._posting is None or await self.posted():
                await self._show(body, "error")
        except Exception as e:
            log.warning("could not tell that the answer to %s failed: %s", self._question, e)
        self.finished = True
