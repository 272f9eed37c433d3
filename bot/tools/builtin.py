"""The built-in tools (docs/spec.md §4), each doing its real work in Matrix and PostgreSQL.

All of them are idempotent: run twice with one action's idempotency key, they act once (a task,
a reminder, a session room or a DM is found by that key instead of being made again).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from appservice.matrix import markdown_content, pill
from bot.commands.outputs import inline
from bot.core import strings
from bot.core.errors import UserError
from bot.rooms.direct import direct_room
from bot.sessions.rooms import room_link, start_session
from bot.tools.registry import Tool, ToolCall, ToolResult

UserId = Annotated[str, Field(pattern=r"^@[^:\s]+:\S+$", description="A Matrix user ID")]

_RELATIVE = re.compile(r"^(?:in\s+)?(\d+)\s*(m|min|mins|minutes?|h|hours?|d|days?)$", re.I)


def parse_due(text: str, now: datetime | None = None) -> datetime:
    """`in 30 minutes`, `2h`, `1d`, or an ISO 8601 time (UTC unless it says otherwise)."""
    now = now or datetime.now(UTC)
    cleaned = text.strip()
    if match := _RELATIVE.match(cleaned):
        amount, unit = int(match[1]), match[2].lower()[0]
        delta = {"m": timedelta(minutes=amount), "h": timedelta(hours=amount)}.get(
            unit, timedelta(days=amount)
        )
        return now + delta
    try:
        moment = datetime.fromisoformat(cleaned)
    except ValueError:
        raise ValueError("a time like `in 30 minutes`, `2h`, `1d` or 2026-12-01T09:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class CreateTaskArgs(_Args):
    title: str = Field(min_length=1, max_length=200, description="What is to be done")
    notes: str = Field(default="", max_length=4000, description="Details")
    assignee: UserId | None = Field(default=None, description="Who does it")
    due: date | None = Field(default=None, description="By when, YYYY-MM-DD")


async def create_task(call: ToolCall, args: CreateTaskArgs) -> ToolResult:
    task = await call.ctx.tasklist.add(
        call.workspace.id,
        call.room_id,
        args.title,
        call.requested_by,
        notes=args.notes,
        assignee=args.assignee,
        due=args.due,
        idempotency_key=call.idempotency_key,
    )
    return ToolResult(
        summary=strings.TASK_CREATED.format(
            id=task.id,
            title=inline(task.title, 200),
            assignee=strings.TASK_FOR.format(user=pill(task.assignee)) if task.assignee else "",
        ),
        data={"task_id": task.id, "title": task.title},
        external_ids=[f"task:{task.id}"],
    )


class CreateFollowupArgs(_Args):
    text: str = Field(min_length=1, max_length=2000, description="What to remind of")
    due: str = Field(description="When: `in 30 minutes`, `2h`, `1d` or an ISO 8601 time")
    to: UserId | None = Field(default=None, description="Remind this person in a DM, not the room")

    @field_validator("due")
    @classmethod
    def _due(cls, value: str) -> str:
        parse_due(value)  # raises ValueError with the accepted forms
        return value


async def create_followup(call: ToolCall, args: CreateFollowupArgs) -> ToolResult:
    if args.to is not None:
        await _require_member(call, args.to)
    due_at = parse_due(args.due)
    followup = await call.ctx.followups.add(
        call.workspace.id,
        call.room_id,
        args.text,
        due_at,
        call.requested_by,
        recipient=args.to,
        idempotency_key=call.idempotency_key,
    )
    call.ctx.followup_wakeup.set()
    where = args.to or strings.THIS_ROOM
    return ToolResult(
        summary=strings.FOLLOWUP_SET.format(
            id=followup.id, when=followup.due_at.strftime("%Y-%m-%d %H:%M UTC"), where=where
        ),
        data={"followup_id": followup.id, "due_at": followup.due_at.isoformat()},
        external_ids=[f"followup:{followup.id}"],
    )


class CreateProjectArgs(_Args):
    topic: str = Field(min_length=1, max_length=200, description="What the new session is about")


async def create_project(call: ToolCall, args: CreateProjectArgs) -> ToolResult:
    session = await start_session(
        call.ctx, call.workspace, args.topic, call.requested_by, call.idempotency_key
    )
    link = room_link(session.room_id, call.ctx.config.homeserver.domain)
    return ToolResult(
        summary=strings.PROJECT_CREATED.format(topic=args.topic, link=link),
        data={"room_id": session.room_id, "link": link},
        external_ids=[session.room_id, link],
    )


class SummarizeChannelArgs(_Args):
    room: str | None = Field(
        default=None, pattern=r"^!\S+$", description="A session room ID; default: this room"
    )
    hours: int = Field(default=24, ge=1, le=24 * 90, description="How far back")


async def summarize_channel(call: ToolCall, args: SummarizeChannelArgs) -> ToolResult:
    room_id = args.room or call.room_id
    session = await call.ctx.sessions.get(room_id)
    if session is None or session.workspace_id != call.workspace.id:
        raise UserError(strings.NOT_A_SESSION_OF.format(room=room_id, name=call.workspace.name))
    since = datetime.now(UTC) - timedelta(hours=args.hours)
    messages = [
        m
        for m in await call.ctx.history.recent(room_id, 500)
        if m.sent_at >= since and m.kind == "user" and m.body
    ]
    people = sorted({m.sender for m in messages})
    lines = [
        strings.SUMMARY_PERIOD.format(
            hours=args.hours, count=len(messages), people=", ".join(people) or strings.NOBODY
        )
    ]
    lines += [
        strings.SUMMARY_MESSAGE.format(sender=m.sender, text=(m.body or "")[:200])
        for m in messages[-10:]
    ]
    return ToolResult(
        summary="\n".join(lines),
        data={"room_id": room_id, "messages": len(messages), "people": people},
    )


class SendNotificationArgs(_Args):
    user: UserId = Field(description="The member to notify")
    text: str = Field(min_length=1, max_length=4000, description="The message")


async def _require_member(call: ToolCall, user: str) -> None:
    member = await call.ctx.workspaces.member(call.workspace.id, user)
    if member is None or member.membership not in ("join", "invite"):
        raise UserError(strings.NOT_A_MEMBER.format(user=user, name=call.workspace.name))


async def send_notification(call: ToolCall, args: SendNotificationArgs) -> ToolResult:
    await _require_member(call, args.user)
    txn_id = f"doryo.n.{call.idempotency_key}"
    event_id = await call.ctx.sent.get(txn_id)
    room_id = await direct_room(call.ctx, args.user)
    if event_id is None:
        text = strings.NOTIFICATION.format(
            by=call.requested_by, name=call.workspace.name, text=args.text
        )
        event_id = await call.ctx.matrix.send_event(
            room_id, "m.room.message", markdown_content(text, mentions=[args.user]), txn_id
        )
        await call.ctx.sent.record(txn_id, room_id, event_id)
    return ToolResult(
        summary=strings.NOTIFICATION_SENT.format(user=args.user),
        data={"user": args.user, "room_id": room_id, "event_id": event_id},
        external_ids=[event_id],
    )


class SearchDocsArgs(_Args):
    query: str = Field(min_length=1, max_length=1000, description="What to look for")
    k: int = Field(default=5, ge=1, le=20, description="How many results")


async def search_docs(call: ToolCall, args: SearchDocsArgs) -> ToolResult:
    memory = call.ctx.memory
    if memory is None:
        raise UserError(strings.MEMORY_OFF)
    hits = await memory.search(call.workspace.id, args.query, k=args.k)
    if not hits:
        return ToolResult(summary=strings.SEARCH_NOTHING.format(query=args.query))
    lines = [
        strings.SEARCH_HIT.format(
            n=n,
            kind=f"document {h.item.place}" if h.item.place else h.item.kind,
            text=h.item.text[:500],
            when=h.item.created_at.strftime("%Y-%m-%d"),
        )
        for n, h in enumerate(hits, start=1)
    ]
    return ToolResult(
        summary="\n".join(lines),
        data={
            "results": [
                {"id": h.item.id, "event_id": h.item.event_id, "room_id": h.item.room_id}
                for h in hits
            ]
        },
    )


def builtin_tools() -> list[Tool]:
    """The built-in tools (docs/spec.md §4)."""
    return [
        Tool(
            "search_docs",
            "1",
            "Search the workspace's memory: messages, summaries, facts and documents.",
            SearchDocsArgs,
            search_docs,
            writes=False,
            idempotent=True,
        ),
        Tool(
            "create_task",
            "1",
            "Add a task to the workspace's task list.",
            CreateTaskArgs,
            create_task,
            idempotent=True,
        ),
        Tool(
            "create_followup",
            "1",
            "Remind the room, or a person in a DM, of something when it is due.",
            CreateFollowupArgs,
            create_followup,
            idempotent=True,
        ),
        Tool(
            "create_project",
            "1",
            "Start a new session room in the workspace about a topic.",
            CreateProjectArgs,
            create_project,
            idempotent=True,
        ),
        Tool(
            "summarize_channel",
            "1",
            "Summarize what was said in a session over a period.",
            SummarizeChannelArgs,
            summarize_channel,
            writes=False,
            idempotent=True,
        ),
        Tool(
            "send_notification",
            "1",
            "Send a workspace member a message in a direct chat.",
            SendNotificationArgs,
            send_notification,
            idempotent=True,
        ),
    ]
