"""What goes into a session's history: messages (people's, the agent's answers, the bot's
notices), edits (the stored text follows), redactions (the stored text is deleted), and, when the
bot joins a room that already has a past, its recent messages (backfill through /messages).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from appservice.matrix import MESSAGE_TYPES
from bot.agent.answer import ANSWER_KEY, without_sources
from bot.commands.catalog import NAMES
from bot.commands.parser import Addressing, Command, UnknownCommand, parse
from bot.memory import MemoryInput
from bot.sessions.store import Session
from bot.workspaces.access import may_redact_others

if TYPE_CHECKING:
    from bot.context import Context

log = logging.getLogger(__name__)

BACKFILL_PAGE = 100
BACKFILL_MAX_PAGES = 50
"""Pages of /messages walked back at most (past what was recorded since, to what came before)."""


def _sent_at(event: Mapping[str, Any]) -> datetime:
    ts = event.get("origin_server_ts")
    return datetime.fromtimestamp(ts / 1000, UTC) if isinstance(ts, int) else datetime.now(UTC)


def message_kind(event: Mapping[str, Any], ctx: Context) -> str | None:
    """user | agent | system for a message worth keeping; None for anything else."""
    if event.get("type") != "m.room.message":
        return None
    content = event.get("content", {})
    if not isinstance(content.get("body"), str) or _replaced(content) is not None:
        return None
    if ctx.namespace.match(str(event.get("sender", ""))):
        return "system" if content.get("msgtype") == "m.notice" else "agent"
    return "user"


def _replaced(content: Mapping[str, Any]) -> str | None:
    relates = content.get("m.relates_to")
    if isinstance(relates, Mapping) and relates.get("rel_type") == "m.replace":
        target = relates.get("event_id")
        return target if isinstance(target, str) else ""
    return None


MEDIA_TYPES = ("m.image", "m.video", "m.audio")


def says_something(content: Mapping[str, Any]) -> bool:
    """Whether a message's body is words someone wrote: a picture's, video's or sound's body is
    its caption only when a `filename` other than it is given (MSC2530); otherwise it is just
    the file's name ("IMG_2041.jpg"), nothing worth remembering. A file's name is kept: "Dana
    shared budget.xlsx" answers "who has the budget?"."""
    if content.get("msgtype") not in MEDIA_TYPES:
        return True
    filename = content.get("filename")
    return isinstance(filename, str) and bool(filename) and filename != content.get("body")


def _redacted(event: Mapping[str, Any]) -> str | None:
    if event.get("type") != "m.room.redaction":
        return None
    target = event.get("redacts") or event.get("content", {}).get("redacts")  # v11 moved it
    return target if isinstance(target, str) else None


async def record(ctx: Context, session: Session, event: Mapping[str, Any]) -> None:
    """Apply one live event of a session room to its history, and to the workspace's memory:
    people's messages (not commands) are remembered, the agent's answers once done; an edit is
    re-remembered, a redaction forgotten."""
    if (target := _redacted(event)) is not None:
        await _redact(ctx, session, event, target)
        return
    content = event.get("content", {})
    if not isinstance(content, Mapping):
        return
    if (target := _replaced(content)) is not None:
        await _edit(ctx, session, event, content, target)
        return
    kind = message_kind(event, ctx)
    if kind is None or not session.active:
        return  # an ended session keeps what it had (edits and redactions still apply)
    body = str(content["body"])
    is_command = kind == "user" and _is_command(content, ctx)
    await ctx.history.add(
        session.room_id,
        str(event["event_id"]),
        str(event["sender"]),
        kind,
        body,
        _sent_at(event),
        is_command=is_command,
    )
    if kind == "user" and not to_the_bot(content, ctx):
        if not await _answers_the_bot(ctx, session, content) and says_something(content):
            await _remember(ctx, session, event, body)
        if ctx.memory is not None:
            if not await ctx.documents.shared(session, event):
                await ctx.documents.linked(session, event, body)
    elif kind == "agent":
        answer = content.get(ANSWER_KEY)
        if isinstance(answer, Mapping) and answer.get("status") == "done":
            await _remember_answer(ctx, session, event, body)


async def _redact(ctx: Context, session: Session, event: Mapping[str, Any], target: str) -> None:
    """Honoured as the homeserver honours it: from the message's sender, or from someone with
    the room's power to redact, and only for a message of this room. Another server may send a
    redaction nobody had the right to (it reaches the bot and is not applied): it deletes
    nothing."""
    author = await ctx.history.sender_of(session.room_id, target)
    if author is None:
        log.info(
            "history: %s redacts %s, not a message of this room: ignored",
            event.get("event_id"),
            target,
        )
        return
    sender = str(event.get("sender", ""))
    if sender != author and not await may_redact_others(ctx, session.room_id, sender):
        log.info("history: %s may not redact %s's message %s: ignored", sender, author, target)
        return
    if await ctx.history.redact(target):
        log.debug("history: %s redacted", target)
    await ctx.documents.forget(session.workspace_id, target)
    if ctx.memory is not None:
        await ctx.memory.indexer.delete_event(session.workspace_id, target)


async def _edit(
    ctx: Context,
    session: Session,
    event: Mapping[str, Any],
    content: Mapping[str, Any],
    target: str,
) -> None:
    new = content.get("m.new_content", {})
    if not isinstance(new, Mapping) or not isinstance(new.get("body"), str):
        return
    original = await ctx.history.sender_of(session.room_id, target)
    # Only the author may edit a message (clients ignore edits by anyone else too).
    if original != event.get("sender"):
        return
    await ctx.history.edit(target, new["body"], _sent_at(event))
    if ctx.memory is None:
        return
    answer = new.get(ANSWER_KEY)
    if isinstance(answer, Mapping):
        # The agent's answer streams as edits: it is remembered once, when done.
        if answer.get("status") == "done":
            await _remember_answer(ctx, session, {**event, "event_id": target}, new["body"])
        return
    if not to_the_bot(new, ctx):
        await ctx.memory.indexer.update_event(
            session.workspace_id, target, new["body"], edited_at=_sent_at(event)
        )


async def _remember(ctx: Context, session: Session, event: Mapping[str, Any], text: str) -> None:
    if ctx.memory is None:
        return
    await ctx.memory.indexer.add(
        [
            MemoryInput(
                workspace_id=session.workspace_id,
                text=text,
                kind="message",
                context=session.topic or None,
                room_id=session.room_id,
                event_id=str(event["event_id"]),
                sender=str(event.get("sender", "")),
                created_at=_sent_at(event),
            )
        ]
    )


async def _remember_answer(
    ctx: Context, session: Session, event: Mapping[str, Any], body: str
) -> None:
    """The agent's answers are memories only with memory.keep_answers, without their sources
    line: otherwise an answer (and the answer to the answer) outranks the fact it is about."""
    if ctx.config.memory.keep_answers:
        await _remember(ctx, session, event, without_sources(body))


async def _answers_the_bot(ctx: Context, session: Session, content: Mapping[str, Any]) -> bool:
    """A reply to the bot's message (a follow-up in its thread: Element makes the thread's
    latest message the reply's target) is part of the conversation with the bot."""
    relates = content.get("m.relates_to")
    in_reply_to = relates.get("m.in_reply_to") if isinstance(relates, Mapping) else None
    target = in_reply_to.get("event_id") if isinstance(in_reply_to, Mapping) else None
    if not isinstance(target, str):
        return False
    sender = await ctx.history.sender_of(session.room_id, target)
    return sender is not None and bool(ctx.namespace.match(sender))


def to_the_bot(content: Mapping[str, Any], ctx: Context) -> bool:
    """A command, a question or an instruction for the bot (`!…`, `@ask`, "Doryo: …"): part
    of the conversation with the bot, not of what the team said; never a memory."""
    addressing = Addressing(
        bot_user_id=ctx.bot_user_id,
        bot_names=(ctx.config.appservice.bot_displayname,),
        commands=NAMES,
    )
    return parse(content, addressing) is not None


def _is_command(content: Mapping[str, Any], ctx: Context) -> bool:
    request = parse(content, Addressing(bot_user_id=ctx.bot_user_id, commands=NAMES))
    return isinstance(request, Command | UnknownCommand)


async def backfill(ctx: Context, session: Session, *, before: datetime) -> int:
    """Store the session room's latest messages sent before `before` (when the bot began to
    record it; oldest first), and remember people's. Those recorded since are passed over."""
    room_id = session.room_id
    wanted = ctx.config.bot.backfill_messages
    if wanted <= 0:
        return 0
    found: list[dict[str, Any]] = []
    token: str | None = None
    for _ in range(BACKFILL_MAX_PAGES):
        page = await ctx.matrix.messages(
            room_id,
            limit=BACKFILL_PAGE,
            from_token=token,
            event_filter={"types": MESSAGE_TYPES},
        )
        chunk = [
            e
            for e in page.get("chunk", [])
            if message_kind(e, ctx) is not None and _sent_at(e) < before
        ]
        found.extend(chunk[: wanted - len(found)])
        token = page.get("end")
        if len(found) >= wanted or not page.get("chunk") or not token:
            break
    stored = 0
    for event in reversed(found):  # /messages walked backwards
        kind = str(message_kind(event, ctx))
        is_command = _is_command(event["content"], ctx)
        body = str(event["content"]["body"])
        seq = await ctx.history.add(
            room_id,
            str(event["event_id"]),
            str(event["sender"]),
            kind,
            body,
            _sent_at(event),
            is_command=is_command,
        )
        if seq is not None:
            stored += 1
            content = event["content"]
            if kind == "user" and not to_the_bot(content, ctx) and says_something(content):
                await _remember(ctx, session, event, body)
    return stored
