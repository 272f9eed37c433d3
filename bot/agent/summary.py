"""A session's summary at `!session end`: what happened (from the history, always), and what it
amounted to (written by the agent when a model answers). Stored in the workspace's memory."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bot.agent import prompt
from bot.agent.ask import workspace_limits
from bot.agent.choice import blueprint_for
from bot.core.errors import BudgetExceeded, LLMUnavailable, RateLimited, UnknownModel
from bot.llm import CallContext, Message
from bot.memory import MemoryInput
from bot.sessions.rooms import summary_text
from bot.sessions.store import Session
from bot.workspaces.store import Workspace

if TYPE_CHECKING:
    from bot.context import Context

log = logging.getLogger(__name__)

MESSAGES = 300
_INSTRUCTIONS = (
    "Summarize this chat session for the team's long-term memory, in at most 150 words of "
    "Markdown bullet points: decisions taken, open questions, tasks and who does them. Only "
    "what the messages say."
)


async def summarize(ctx: Context, session: Session, workspace: Workspace) -> str:
    count, people, first, last = await ctx.history.stats(session.room_id)
    facts = summary_text(count, people, first, last, session.topic)
    stored = [
        m
        for m in await ctx.history.recent(session.room_id, MESSAGES)
        if m.body and not m.is_command and m.kind in ("user", "agent")
    ]
    if not stored:
        return facts
    transcript = "\n".join(f"{prompt.display_name(m.sender)}: {m.body}" for m in stored)
    blueprint = await blueprint_for(ctx.blueprints, workspace, session)
    request = blueprint.request(
        [Message.system(_INSTRUCTIONS), Message.user(transcript)],
        context=CallContext(workspace_id=workspace.id, room_id=session.room_id),
        limits=workspace_limits(workspace),
    )
    try:
        result = await ctx.llm.chat(request)
    except (LLMUnavailable, UnknownModel, RateLimited, BudgetExceeded) as e:
        log.info("session %s summarized from its history only: %s", session.room_id, e)
        return facts
    written = result.text.strip()
    return f"{facts}\n\n{written}" if written else facts


async def remember_summary(ctx: Context, session: Session, text: str) -> None:
    if ctx.memory is None:
        return
    sources = tuple(
        m.event_id
        for m in await ctx.history.recent(session.room_id, MESSAGES)
        if m.kind == "user" and not m.is_command
    )
    await ctx.memory.add_now(
        [
            MemoryInput(
                workspace_id=session.workspace_id,
                text=text,
                kind="summary",
                context=session.topic or None,
                room_id=session.room_id,
                source_event_ids=sources,
            )
        ]
    )
