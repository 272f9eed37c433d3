"""Reading shared files into the workspace's memory, in the background (docs/documents.md).

    reader.shared(session, event)   a file message of a session: queued (a documents row)
    reader.forget(workspace, event) a redaction, `!forget`: the document and its pieces go
    reader.run()                    the loop that reads what is queued, oldest first

One file at a time, so that the room is never held up and a big file cannot crowd out
questions: the download streams with a byte limit; the parsing runs in a process of its own
(bot.documents.extract_worker) at the lowest priority with limits on memory and time; the
pieces are embedded in small batches on the embedding model's low-priority lane, which the
indexing of messages shares, while an @ask's question has a lane of its own. A file of
`documents.progress_pages` pages or more shows its progress in one notice, edited.

Who: only a file shared by a member of the workspace (read from the space's state when it is
read) is read. Versions: a file posted as a reply to a document, or under the same name in the
same session, replaces it — when the same person shares it, or someone who may redact others'
messages in that room; otherwise both are kept (a member cannot quietly swap someone else's
contract for their own). Failure: an outage (homeserver, database, embedding model) puts the
file back in the queue; a crash leaves it 'reading', and the next start reads it again; after
MAX_ATTEMPTS readings the file is skipped, and the room told.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any, Protocol
from urllib.parse import urlsplit

import asyncpg
import numpy as np
from mautrix.crypto.attachments import decrypt_attachment
from mautrix.errors import DecryptionError

from appservice.errors import HomeserverUnavailable, MatrixRequestError, MediaTooLarge
from appservice.matrix import markdown_content
from bot.commands.outputs import inline
from bot.core import strings
from bot.core.config import Config
from bot.core.errors import EmbeddingError, UserError
from bot.core.replies import Replier, SentEventStore
from bot.documents.extract import FORMAT_NAMES, Extracted, Section, Unreadable
from bot.documents.links import LinkRefused, fetch, first_link
from bot.documents.store import MAX_ATTEMPTS, Document, DocumentStore
from bot.memory.embeddings import Vectors
from bot.memory.indexer import prepare_text
from bot.memory.records import NewItem
from bot.memory.service import Memory
from bot.memory.text import embedding_text
from bot.sessions.store import Session
from bot.workspaces.access import current_role, may_redact_others
from bot.workspaces.context import WorkspacesContext

log = logging.getLogger(__name__)

FILE_TYPES = ("m.file",)
"""Message types whose attachment is read. Images' and videos' captions are their body, kept
as messages like any other text; their pixels are not read."""
EMBED_BATCH = 16
"""Pieces embedded per call: small, so that the indexing of messages, which shares the model's
low-priority lane, never waits behind a whole document."""
PROGRESS_INTERVAL = 3.0
"""Seconds between edits of a progress notice at most."""
NAME_CHARS = 200
_RETRY_PAUSE = 30.0
_IDLE_CHECK = 60.0


class DocumentsContext(WorkspacesContext, Protocol):
    @property
    def sent(self) -> SentEventStore: ...

    @property
    def memory(self) -> Memory | None: ...


def file_name(content: Mapping[str, Any]) -> str:
    """The file's name, as its sender's client gave it: without a path, control characters or
    excess length (it is shown in rooms and in prompts)."""
    raw = content.get("filename")
    if not isinstance(raw, str) or not raw.strip():
        raw = content.get("body")
    name = raw if isinstance(raw, str) else ""
    name = PureWindowsPath(PurePosixPath(name).name).name
    name = "".join(c for c in name if c.isprintable()).strip()
    if len(name) > NAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        name = (stem[: NAME_CHARS - len(ext) - 2] + "…" + dot + ext) if dot else name[:NAME_CHARS]
    return name or "file"


def link_name(url: str) -> str:
    """A link as `!docs` and citations show it: host and path, without the query."""
    parts = urlsplit(url)
    name = "".join(c for c in f"{parts.hostname or ''}{parts.path}".rstrip("/") if c.isprintable())
    return name[:NAME_CHARS] or "link"


def _info(content: Mapping[str, Any]) -> tuple[str | None, int | None]:
    info = content.get("info")
    info = info if isinstance(info, Mapping) else {}
    mimetype = info.get("mimetype")
    size = info.get("size")
    return (
        mimetype if isinstance(mimetype, str) else None,
        size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None,
    )


def _reply_target(content: Mapping[str, Any]) -> str | None:
    """The event a message answers, when its sender chose it (not a thread's fallback)."""
    relates = content.get("m.relates_to")
    if not isinstance(relates, Mapping) or relates.get("is_falling_back") is True:
        return None
    reply = relates.get("m.in_reply_to")
    target = reply.get("event_id") if isinstance(reply, Mapping) else None
    return target if isinstance(target, str) else None


def pieces_text(count: int) -> str:
    return f"{count} piece" if count == 1 else f"{count} pieces"


def size_text(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}".replace(".0 ", " ")
    return f"{size} bytes"


def reason(e: Unreadable, config: Config) -> str:
    """What the room is told about a file that was not read."""
    d = e.detail
    settings = config.documents
    if e.why == "unsupported":
        if d.get("binary"):
            return strings.DOC_WHY_BINARY
        what = str(d.get("mimetype") or "") or "this kind of file"
        return strings.DOC_WHY_UNSUPPORTED.format(what=inline(what, 60))
    if e.why == "protected":
        return strings.DOC_WHY_PROTECTED
    if e.why == "no_text":
        return strings.DOC_WHY_NO_TEXT
    if e.why == "too_large":
        if "pages" in d:
            return strings.DOC_WHY_TOO_MANY_PAGES.format(pages=d["pages"], limit=d["max_pages"])
        if "chars" in d:
            return strings.DOC_WHY_TOO_MUCH_TEXT.format(chars=d["chars"], limit=d["max_chars"])
        if "unpacked" in d:
            return strings.DOC_WHY_UNPACKED
        if "size" in d:
            return strings.DOC_WHY_TOO_BIG.format(
                size=size_text(int(str(d["size"]))), limit=size_text(settings.max_bytes)
            )
        return strings.DOC_WHY_MEMORY
    if e.why == "slow":
        return strings.DOC_WHY_SLOW.format(seconds=settings.read_timeout)
    if e.why == "undecryptable":
        return strings.DOC_WHY_UNDECRYPTABLE
    if e.why == "gone":
        return strings.DOC_WHY_GONE.format(error=inline(str(d.get("error", "")), 80))
    return strings.DOC_WHY_BROKEN.format(error=inline(str(d.get("error", "")), 80) or "unknown")


async def extract_apart(
    data: bytes,
    name: str,
    mimetype: str | None,
    *,
    max_pages: int,
    max_chars: int,
    timeout: float,
) -> Extracted:
    """bot.documents.extract.extract, in a process of its own (killed after `timeout`)."""
    args = json.dumps(
        {"name": name, "mimetype": mimetype, "max_pages": max_pages, "max_chars": max_chars}
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.documents.extract_worker",
        args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate(data)
    except TimeoutError:
        raise Unreadable("slow", {"seconds": timeout}) from None
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    try:
        result = json.loads(out)
    except ValueError:
        log.warning(
            "documents: the reader of %r ended with %s: %s",
            name,
            process.returncode,
            err.decode(errors="replace")[-500:],
        )
        raise Unreadable("too_large" if process.returncode == -9 else "broken", {}) from None
    if not result.get("ok"):
        raise Unreadable(result["why"], dict(result.get("detail") or {}))
    return Extracted(
        result["format"],
        tuple(Section(s["place"], s["text"], s["page"]) for s in result["sections"]),
        pages=result["pages"],
        empty_pages=result["empty_pages"],
    )


class _Progress:
    """The notice that shows a long reading's progress: posted once, edited."""

    def __init__(
        self, ctx: DocumentsContext, store: DocumentStore, document: Document, name: str
    ) -> None:
        self._ctx = ctx
        self._store = store
        self._document = document
        self._name = name
        self._reply = Replier(
            ctx.matrix,
            ctx.sent,
            document.room_id,
            document.event_id,
            retried=True,
            purpose="document",
        )
        self.event_id = document.notice_event_id
        self._last = 0.0

    async def post(self, markdown: str) -> None:
        """The notice's first form, or (posted before) its edit. A notice the homeserver
        refuses (the bot may not post there any more) is logged; the reading goes on."""
        try:
            await self._post(markdown)
        except MatrixRequestError as e:
            log.warning("documents: notice about %s not posted: %s", self._name, e)

    async def _post(self, markdown: str) -> None:
        if self.event_id is not None:
            await self.edit(markdown, force=True)
            return
        self.event_id = await self._reply.send_near(markdown, self._document.event_id)
        await self._store.set_notice(
            self._document.workspace_id, self._document.event_id, self.event_id
        )
        self._last = time.monotonic()

    async def edit(self, markdown: str, *, force: bool = False) -> None:
        if self.event_id is None:
            return
        now = time.monotonic()
        if not force and now - self._last < PROGRESS_INTERVAL:
            return
        self._last = now
        try:
            await self._ctx.matrix.edit(
                self._document.room_id, self.event_id, markdown_content(markdown, notice=True)
            )
        except (HomeserverUnavailable, MatrixRequestError) as e:
            if force:
                raise
            log.info("documents: progress of %s not shown: %s", self._name, e)


class DocumentReader:
    def __init__(self, ctx: DocumentsContext, store: DocumentStore) -> None:
        self._ctx = ctx
        self.store = store
        self.queued = asyncio.Event()
        """Set when a file or link was queued: the reading loop waits on it (in a deployment
        of several processes, the one running the loop is told: bot.app)."""
        self._busy = False
        self.read = 0
        """Files read since start (for tests and benchmarks)."""
        self.pages_read = 0

    # -- what the rest of the bot calls ------------------------------------------------------

    async def shared(self, session: Session, event: Mapping[str, Any]) -> bool:
        """A message of a session: queue its file if it has one to read. True if queued."""
        content = event.get("content")
        if not isinstance(content, Mapping) or content.get("msgtype") not in FILE_TYPES:
            return False
        if not self._ctx.config.documents.enabled:
            return False
        encrypted = content.get("file")
        source: Mapping[str, Any] = encrypted if isinstance(encrypted, Mapping) else content
        if not isinstance(source.get("url"), str):
            return False
        mimetype, size = _info(content)
        kept = ("url", "file", "info", "m.relates_to", "filename", "body")
        return await self._queue(
            session,
            event,
            name=file_name(content),
            mimetype=mimetype,
            size=size,
            content={k: content[k] for k in kept if k in content},
        )

    async def linked(self, session: Session, event: Mapping[str, Any], text: str) -> bool:
        """A message of a session that links to a web page (memory.fetch_links): queue the
        page of its first link. True if queued."""
        if not self._ctx.config.memory.fetch_links:
            return False
        url = first_link(text)
        if url is None:
            return False
        return await self._queue(
            session, event, name=link_name(url), mimetype=None, size=None, content={"link": url}
        )

    async def _queue(
        self,
        session: Session,
        event: Mapping[str, Any],
        *,
        name: str,
        mimetype: str | None,
        size: int | None,
        content: Mapping[str, Any],
    ) -> bool:
        ts = event.get("origin_server_ts")
        added = await self.store.add(
            workspace_id=session.workspace_id,
            event_id=str(event["event_id"]),
            room_id=session.room_id,
            sender=str(event.get("sender", "")),
            shared_at=datetime.fromtimestamp(ts / 1000, UTC)
            if isinstance(ts, int)
            else datetime.now(UTC),
            name=name,
            mimetype=mimetype,
            size=size,
            content=content,
        )
        if added:
            self.queued.set()
        return added

    async def forget(self, workspace_id: str, event_id: str) -> Document | None:
        return await self.store.forget(workspace_id, event_id)

    async def idle(self, timeout: float) -> None:
        """Wait until nothing is queued or being read (for tests and benchmarks)."""
        async with asyncio.timeout(timeout):
            while self._busy or await self.store.waiting():
                self.queued.set()
                await asyncio.sleep(0.1)

    # -- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                document = await self.store.claim_next()
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as e:
                log.warning("documents: cannot read the queue (%s); trying again", e)
                await asyncio.sleep(_RETRY_PAUSE)
                continue
            if document is None:
                self.queued.clear()
                try:
                    async with asyncio.timeout(_IDLE_CHECK):
                        await self.queued.wait()
                except TimeoutError:
                    pass
                continue
            self._busy = True
            try:
                await self._read(document)
            except (
                HomeserverUnavailable,
                EmbeddingError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                OSError,
            ) as e:
                log.warning("documents: reading %s paused (%s); trying again", document.name, e)
                await self._requeue(document)
                await asyncio.sleep(_RETRY_PAUSE)
            except asyncio.CancelledError:
                # Stopping is no failure: the reading starts again at the next start, its
                # attempt not counted.
                with contextlib.suppress(Exception):
                    await asyncio.shield(
                        self.store.requeue(document.workspace_id, document.event_id, count=False)
                    )
                raise
            except Exception:
                log.exception("documents: reading %s failed", document.name)
                await self._requeue(document)  # skipped once MAX_ATTEMPTS readings failed
                await asyncio.sleep(1)
            finally:
                self._busy = False

    async def _requeue(self, document: Document) -> None:
        try:
            await self.store.requeue(document.workspace_id, document.event_id)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as e:
            log.warning("documents: %s stays 'reading' until the next start: %s", document.name, e)

    async def _read(self, document: Document) -> None:
        ctx = self._ctx
        name = document.name
        progress = _Progress(ctx, self.store, document, name)
        link = document.content.get("link")
        tell = not isinstance(link, str)  # a file's sharer is told why it was not read
        if document.attempts > MAX_ATTEMPTS:
            why = strings.DOC_WHY_ATTEMPTS.format(attempts=MAX_ATTEMPTS)
            await self._skip(document, progress, why, tell=tell)
            return
        workspace = await ctx.workspaces.get(document.workspace_id)
        if workspace is None:
            await self.store.forget(document.workspace_id, document.event_id)
            return
        try:
            role = await current_role(ctx, workspace, document.sender)
        except UserError as e:  # the bot is no longer in the workspace's space
            await self._skip(document, progress, str(e), tell=tell)
            return
        if role is None:
            why = strings.DOC_WHY_NOT_MEMBER.format(workspace=inline(workspace.name, 80))
            await self._skip(document, progress, why, tell=tell)
            return
        memory = ctx.memory
        if memory is None:
            raise EmbeddingError("the workspace memory is not open")
        settings = ctx.config.documents
        try:
            if isinstance(link, str):
                data, parse_as, mimetype = await self._fetch(link)
            else:
                data, parse_as, mimetype = await self._download(document), name, document.mimetype
            extracted = await extract_apart(
                data,
                parse_as,
                mimetype,
                max_pages=settings.max_pages,
                max_chars=settings.max_chars,
                timeout=settings.read_timeout,
            )
        except Unreadable as e:
            await self._skip(document, progress, reason(e, ctx.config), tell=tell)
            return
        except LinkRefused as e:
            await self._skip(document, progress, f"{e}.", tell=False)
            return
        pieces = [
            (section, piece)
            for section in extracted.sections
            for piece in prepare_text(section.text, memory.settings)
        ]
        unit = "pages" if extracted.pages else "pieces"
        total = extracted.pages or len(pieces)
        # Pages, or for a file without pages, pieces (about two a page).
        shows_progress = tell and (
            (extracted.pages or len(pieces) // 2) >= settings.progress_pages
            or document.notice_event_id is not None
        )
        if shows_progress:
            await progress.post(
                strings.DOC_READING.format(name=inline(name, 80), done=0, total=total, unit=unit)
            )
        vectors = await self._embed(memory, name, pieces, progress, total, unit, extracted)
        replaces = await self._earlier_versions(document)
        items = [
            NewItem(
                workspace_id=document.workspace_id,
                kind="document",
                text=piece,
                context=f"{name}, {section.place}",
                chunk=n,
                room_id=document.room_id,
                event_id=document.event_id,
                sender=document.sender,
                author=None,
                agent=None,
                created_at=document.shared_at,
                metadata={
                    "document": name,
                    "place": section.place,
                    "page": section.page,
                    "format": extracted.format,
                },
                source_event_ids=(),
            )
            for n, (section, piece) in enumerate(pieces)
        ]
        stored, unembedded = await self.store.finish(
            document,
            memory.store,
            items,
            vectors,
            model=memory.embedder.model,
            dims=memory.dims,
            pages=extracted.pages,
            replaces=[d.event_id for d in replaces],
        )
        if not stored:
            log.info("documents: %s was redacted or forgotten while it was read", name)
            return
        if unembedded:
            memory.indexer.backfill_soon()
        self.read += 1
        self.pages_read += extracted.pages or 0
        log.info(
            "documents: read %s (%s, %s %s, %d pieces) in %s",
            name,
            FORMAT_NAMES[extracted.format],
            total,
            unit,
            len(items),
            document.room_id,
        )
        extra = strings.DOC_READ_REPLACED if replaces else ""
        if extracted.empty_pages and extracted.pages:
            extra += strings.DOC_READ_EMPTY_PAGES.format(
                empty=extracted.empty_pages, pages=extracted.pages
            )
        if shows_progress or (tell and (replaces or extracted.empty_pages)):
            pages = strings.DOC_READ_PAGES.format(pages=extracted.pages) if extracted.pages else ""
            await progress.post(
                strings.DOC_READ.format(
                    name=inline(name, 80), pages=pages, pieces=pieces_text(len(items)), extra=extra
                )
            )

    async def _fetch(self, url: str) -> tuple[bytes, str, str | None]:
        """A linked page: its bytes, a name to parse it by, its type (as the site said)."""
        page = await fetch(url, self._ctx.config.documents)
        path_name = PurePosixPath(urlsplit(page.url).path).name
        return page.data, path_name or "page", page.mimetype

    async def _download(self, document: Document) -> bytes:
        settings = self._ctx.config.documents
        if document.size is not None and document.size > settings.max_bytes:
            raise Unreadable("too_large", {"size": document.size})
        content = document.content
        encrypted = content.get("file") if isinstance(content.get("file"), dict) else None
        url = str((encrypted or content).get("url", ""))
        try:
            data = await self._ctx.matrix.download(url, max_bytes=settings.max_bytes)
        except MediaTooLarge as e:
            raise Unreadable("too_large", {"size": e.size}) from None
        except MatrixRequestError as e:
            raise Unreadable("gone", {"error": e.errcode}) from None
        if encrypted is None:
            return data
        try:
            key = encrypted["key"]["k"]
            sha256 = encrypted["hashes"]["sha256"]
            iv = encrypted["iv"]
            return bytes(decrypt_attachment(data, key, sha256, iv))
        except (DecryptionError, KeyError, TypeError, ValueError) as e:
            log.info("documents: %s could not be decrypted: %s", document.name, e)
            raise Unreadable("undecryptable", {}) from None

    async def _embed(
        self,
        memory: Memory,
        name: str,
        pieces: Sequence[tuple[Section, str]],
        progress: _Progress,
        total: int,
        unit: str,
        extracted: Extracted,
    ) -> Vectors | None:
        """The pieces' vectors, a small batch at a time; None if the model failed (they are
        stored to be embedded later, and found by words until then)."""
        batches: list[Vectors] = []
        for start in range(0, len(pieces), EMBED_BATCH):
            batch = pieces[start : start + EMBED_BATCH]
            try:
                batches.append(
                    await memory.embedder.embed(
                        [embedding_text(piece, f"{name}, {s.place}") for s, piece in batch]
                    )
                )
            except EmbeddingError as e:
                log.warning("documents: embedding %s failed (%s); stored to embed later", name, e)
                return None
            last = batch[-1][0]
            done = last.page if extracted.pages and last.page else start + len(batch)
            await progress.edit(
                strings.DOC_READING.format(
                    name=inline(name, 80), done=min(done, total), total=total, unit=unit
                )
            )
        return np.concatenate(batches) if batches else None

    async def _earlier_versions(self, document: Document) -> list[Document]:
        """The documents this one replaces (see the module's docstring)."""
        candidates = await self.store.earlier_versions(document)
        target = _reply_target(document.content)
        if target is not None:
            replied = await self.store.get(document.workspace_id, target)
            if replied is not None and replied.status == "done":
                candidates.append(replied)
        chosen: dict[str, Document] = {}
        for old in candidates:
            if old.sender == document.sender or await may_redact_others(
                self._ctx, old.room_id, document.sender
            ):
                chosen[old.event_id] = old
        return list(chosen.values())

    async def _skip(
        self, document: Document, progress: _Progress, why: str, *, tell: bool = True
    ) -> None:
        """Not read, for `why`; the room is told (`tell`: a file; a link that could not be
        read is only listed by !docs: a link to a picture or a login page is no news)."""
        if not await self.store.skip(document.workspace_id, document.event_id, why):
            return
        log.info("documents: %s not read: %s", document.name, why)
        if tell:
            await progress.post(
                strings.DOC_SKIPPED.format(name=inline(document.name, 80), reason=why)
            )
