"""@ask: gather, stream the model's answer into one message, cite, and never leave it hanging.

1. The workspace of the room (none in a DM of someone without one: then no memory), the session,
   and the blueprint that answers there (bot.agent.choice).
2. What the model is told (bot.agent.prompt): the top memories of the workspace, the session's
   recent messages within a token budget, the question.
3. The answer streams into one message (bot.agent.answer); the model may use read-only tools
   (search_docs, summarize_channel) for a few rounds — never a writing one: those need @act and
   the host's ✅.
4. No model answers (none configured, all failing): the answer is the most relevant memories,
   saying that no model answered. A rate limit or budget: the answer says which, and ends.

A blueprint with `backend: letta` answers through the workspace's Letta agent instead
(bot.letta), into the same answer message; with Letta unreachable, the room is told and (per
letta.fallback_to_native) the steps above answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from appservice.errors import HomeserverUnavailable, MatrixRequestError
from appservice.matrix import MESSAGE_TYPES
from bot.agent import finished, prompt
from bot.agent.answer import (
    ANSWER_KEY,
    Answer,
    Source,
    event_link,
    latest_body,
    without_sources,
)
from bot.agent.choice import blueprint_for
from bot.blueprints import Blueprint
from bot.commands.call import CommandCall
from bot.commands.outputs import inline
from bot.core import strings
from bot.core.dispatcher import room_may_go_on
from bot.core.errors import (
    BudgetExceeded,
    EmbeddingError,
    EmbeddingModelMismatch,
    LLMUnavailable,
    RateLimited,
    UnknownModel,
    UserError,
)
from bot.history.store import StoredMessage
from bot.llm import CallContext, ChatResult, Limits, Message, TextDelta, ToolSchema
from bot.memory import MemoryHit
from bot.memory.embeddings import Vectors
from bot.tools.permissions import allowed_tools
from bot.tools.registry import Tool, ToolCall
from bot.workspaces.access import require_member, workspace_of_room
from bot.workspaces.store import Workspace

if TYPE_CHECKING:
    from bot.context import Context

log = logging.getLogger(__name__)

_CITATION = re.compile(r"\[(\d{1,2})\]")
RECENT_MESSAGES = 60


def workspace_limits(workspace: Workspace | None) -> Limits | None:
    if workspace is None or workspace.settings.budget_usd is None:
        return None
    return Limits(workspace_monthly_usd=Decimal(str(workspace.settings.budget_usd)))


async def _workspace(ctx: Context, room_id: str, sender: str) -> Workspace:
    """The workspace whose memory answers here. Where there is none — a room that is neither a
    session nor a direct chat, a DM of someone in no workspace (or in several, none picked) —
    a UserError says so, and no model is asked: nobody outside a workspace costs anything."""
    workspace = await workspace_of_room(ctx, room_id, sender)
    if workspace is None:
        raise UserError(strings.NOT_A_SESSION_HERE)
    await require_member(ctx, workspace, sender)
    return workspace


async def memories(
    ctx: Context,
    workspace: Workspace | None,
    question: str,
    embedding: Awaitable[Vectors] | None = None,
) -> list[MemoryHit]:
    """The workspace's memories that best answer `question` (`embedding`: its vector, already
    on its way: Memory.embed_soon)."""
    if workspace is None or ctx.memory is None or ctx.config.agent.memories == 0:
        return []
    k = ctx.config.agent.memories
    try:
        return await ctx.memory.search(workspace.id, question, k=k, embedding=embedding)
    except EmbeddingModelMismatch as e:
        log.error("%s; searching memory by words only", e)
        return await ctx.memory.search(workspace.id, question, k=k, mode="fulltext")
    except EmbeddingError as e:
        log.warning("memory search failed: %s", e)
        return []


Around = dict[str, tuple[list[StoredMessage], list[StoredMessage]]]


async def neighbours(ctx: Context, workspace: Workspace, hits: Sequence[MemoryHit]) -> Around:
    """People's messages around each memory of a message, in its session (agent.neighbours on
    each side)."""
    events = [h.item.event_id for h in hits if h.item.kind == "message" and h.item.event_id]
    return await ctx.history.around(workspace.id, events, each_side=ctx.config.agent.neighbours)


def _before_and_after(
    hit: MemoryHit, around: Around
) -> tuple[tuple[prompt.Line, ...], tuple[prompt.Line, ...]]:
    before, after = around.get(hit.item.event_id or "", ([], []))
    return (
        tuple(prompt.Line(m.sender, m.body or "", m.sent_at) for m in before),
        tuple(prompt.Line(m.sender, m.body or "", m.sent_at) for m in after),
    )


async def recent_lines(ctx: Context, room_id: str, question_event: str) -> list[prompt.Line]:
    """The room's latest messages: from the session history, or asked of the homeserver."""
    session = await ctx.sessions.get(room_id)
    if session is not None:
        stored = await ctx.history.recent(room_id, RECENT_MESSAGES)
        return [
            prompt.Line(m.sender, m.body, m.sent_at, from_agent=m.kind == "agent")
            for m in stored
            if m.body and m.event_id != question_event and not m.is_command and m.kind != "system"
        ]
    page = await ctx.matrix.messages(
        room_id, limit=RECENT_MESSAGES, event_filter={"types": MESSAGE_TYPES}
    )
    lines = []
    for event in reversed(page.get("chunk", [])):
        content = event.get("content", {})
        body = content.get("body")
        if event.get("type") != "m.room.message":
            continue  # one the bot could not decrypt, or an encrypted reaction
        if not isinstance(body, str) or event.get("event_id") == question_event:
            continue
        if content.get("msgtype") == "m.notice" or body.startswith(("!", "/")):
            continue
        sent = datetime.fromtimestamp(event.get("origin_server_ts", 0) / 1000, UTC)
        from_agent = bool(ctx.namespace.match(str(event.get("sender", ""))))
        lines.append(prompt.Line(str(event.get("sender")), body, sent, from_agent=from_agent))
    return lines


THREAD_MESSAGES = 50


async def thread_lines(
    ctx: Context, room_id: str, root: str | None, question_event: str
) -> list[prompt.Line]:
    """The thread the question is in, so far (its root first): the conversation it follows up."""
    if root is None:
        return []
    try:
        events = [await ctx.matrix.get_event(room_id, root)]
        events += reversed(await ctx.matrix.thread(room_id, root, limit=THREAD_MESSAGES))
    except MatrixRequestError as e:
        log.info("cannot read the thread %s: %s", root, e)
        return []
    lines = []
    for event in events:
        content = event.get("content", {})
        body = content.get("body") if isinstance(content, dict) else None
        if event.get("type") != "m.room.message" or not isinstance(body, str):
            continue
        if event.get("event_id") == question_event:
            continue
        if isinstance(content.get(ANSWER_KEY), dict):
            body = without_sources(latest_body(event) or body)
        sent = datetime.fromtimestamp(event.get("origin_server_ts", 0) / 1000, UTC)
        sender = str(event.get("sender"))
        lines.append(prompt.Line(sender, body, sent, from_agent=bool(ctx.namespace.match(sender))))
    return lines


def read_only_tools(ctx: Context, allowed: set[str] | None) -> list[Tool]:
    return [t for t in ctx.tools.allowed(allowed) if not t.writes]


def schemas(tools: Sequence[Tool]) -> list[ToolSchema]:
    found = []
    for tool in tools:
        function = tool.schema()["function"]
        found.append(ToolSchema(function["name"], function["description"], function["parameters"]))
    return found


async def run_read_only(
    ctx: Context,
    tools: Sequence[Tool],
    workspace: Workspace,
    room_id: str,
    asker: str,
    name: str,
    arguments: dict[str, Any],
    key: str,
) -> str:
    """A tool call the model made during an answer, run at once if it only reads."""
    tool = next((t for t in tools if t.name == name), None)
    if tool is None:
        return strings.ANSWER_TOOL_REFUSED.format(tool=name)
    try:
        args = tool.validate(arguments)
        call = ToolCall(ctx, workspace, room_id, asker, None, key)
        return (await tool.run(call, args)).summary
    except UserError as e:
        return f"error: {e}"


async def answering_tools(
    ctx: Context, workspace: Workspace | None, room_id: str, blueprint: Blueprint
) -> list[Tool]:
    """The tools the model may use while it answers: the blueprint's read-only ones."""
    if workspace is None:
        return []
    return read_only_tools(ctx, await allowed_tools(ctx, room_id, workspace, blueprint))


async def converse(
    ctx: Context,
    blueprint: Blueprint,
    messages: list[Message],
    answer: Answer | None,
    *,
    tools: Sequence[Tool],
    workspace: Workspace | None,
    room_id: str,
    asker: str,
    key: str,
) -> ChatResult:
    """Stream the model's answer (into `answer`), letting it use `tools` (read-only) a few
    rounds."""
    context = CallContext(
        workspace_id=workspace.id if workspace else None, room_id=room_id, user_id=asker
    )
    for round_ in range(ctx.config.agent.tool_rounds + 1):
        offered = schemas(tools) if round_ < ctx.config.agent.tool_rounds else []
        request = blueprint.request(
            messages, context=context, tools=offered, limits=workspace_limits(workspace)
        )
        result: ChatResult | None = None
        async with contextlib.aclosing(ctx.llm.stream(request)) as events:
            async for event in events:
                if isinstance(event, TextDelta) and answer is not None:
                    await answer.append(event.text)
                elif isinstance(event, ChatResult):
                    result = event
        assert result is not None
        if not result.tool_calls or workspace is None:
            return result
        messages = [*messages, result.message()]
        for n, tool_call in enumerate(result.tool_calls):
            output = await run_read_only(
                ctx,
                tools,
                workspace,
                room_id,
                asker,
                tool_call.name,
                dict(tool_call.arguments),
                f"{key}.{round_}.{n}",
            )
            messages.append(Message.tool_result(tool_call.id, output))
    raise AssertionError("unreachable: the last round offers no tools")


UNCITED_SOURCES = 3


def source(number: int, hit: MemoryHit) -> Source | None:
    item = hit.item
    if not item.event_id:
        return None
    return Source(
        number,
        item.room_id or "",
        item.event_id,
        item.sender,
        item.created_at,
        item.text,
        place=item.place,
    )


_WORD = re.compile(r"\w{4,}")


def _words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)}


def cited_sources(text: str, hits: Sequence[MemoryHit]) -> list[Source]:
    """The memories the answer cites, under the numbers it cites them by ([2] stays [2]). If it
    cites none, at most three of those it visibly rests on (two words of four letters or more
    in common): a source list under an answer that used no memory would mislead."""
    numbers = {int(n) for n in _CITATION.findall(text)}
    numbered = list(enumerate(hits, start=1))
    chosen = [(n, h) for n, h in numbered if n in numbers]
    if not numbers:
        said = _words(text)
        chosen = [(n, h) for n, h in numbered if len(said & _words(h.item.text)) >= 2]
        chosen = chosen[:UNCITED_SOURCES]
    return [s for n, h in chosen if (s := source(n, h)) is not None]


def memory_only_text(reason: str, hits: Sequence[MemoryHit], domain: str) -> str:
    if not hits:
        return strings.ANSWER_NO_MODEL_NOTHING.format(reason=reason)
    lines = [strings.ANSWER_NO_MODEL.format(reason=reason)]
    for n, hit in enumerate(hits, start=1):
        item = hit.item
        who = prompt.display_name(item.sender) + ", " if item.sender else ""
        link = (
            f" — [link]({event_link(item.room_id, item.event_id, domain)})"
            if item.room_id and item.event_id
            else ""
        )
        text = item.text if len(item.text) < 300 else item.text[:297] + "…"
        where = f"{inline(item.place, 90)}, " if item.place else ""
        lines.append(f"{n}. {text} _({where}{who}{item.created_at:%Y-%m-%d})_{link}")
    return "\n".join(lines)


async def ask(call: CommandCall) -> None:
    ctx = call.ctx
    question = call.command.text.strip()
    if not question:
        raise UserError(strings.EMPTY_ASK)
    # The question's vector takes longest to get: it is on its way while the rest is looked up,
    # often since the question arrived (bot.agent.early).
    embedding = None
    if ctx.memory is not None and ctx.config.agent.memories:
        if ctx.early_questions is not None:
            embedding = ctx.early_questions.take(call.reply.event_id, question)
        if embedding is None:
            embedding = ctx.memory.embed_soon(question)
    try:
        await _answer(call, question, embedding)
    finally:
        if embedding is not None:
            embedding.cancel()  # unused: Letta answered, or something failed first


async def _answer(call: CommandCall, question: str, embedding: Awaitable[Vectors] | None) -> None:
    ctx = call.ctx
    workspace = await _workspace(ctx, call.room_id, call.sender)
    session = await ctx.sessions.get(call.room_id)
    # Who may ask is decided and the question is in the session's history: the room's next
    # events need not wait for the model (the answer may take it a minute).
    room_may_go_on()
    question_event = call.reply.event_id
    domain = ctx.config.homeserver.domain
    # A question inside a thread is answered there; otherwise a session answers in a new thread
    # under the question (setting `threads`), a DM with a plain reply, seen in the timeline.
    in_thread = call.reply.thread_root
    answer = Answer(
        ctx.matrix,
        call.reply,
        call.room_id,
        question_event,
        threaded=in_thread is not None or (session is not None and workspace.settings.threads),
        thread_root=in_thread,
        domain=domain,
        edit_interval=ctx.config.agent.edit_interval,
    )
    try:
        if (done := await finished.load(ctx.db, question_event)) is not None:
            # Handled again after the model had answered: post that, do not ask again.
            answer.shown = list(done.shown)
            await answer.finish(
                model=done.model, sources=done.sources, text=done.text, notes=done.notes
            )
            return
        blueprint = await blueprint_for(ctx.blueprints, workspace, session)
        if blueprint.backend == "letta" and ctx.letta is not None:
            answer.start()
            if await ctx.letta.answer(
                call.sender, call.reply, workspace, session, blueprint, answer, question
            ):
                return
        hits, lines, thread, tools = await asyncio.gather(
            memories(ctx, workspace, question, embedding),
            recent_lines(ctx, call.room_id, question_event),
            thread_lines(ctx, call.room_id, in_thread, question_event),
            answering_tools(ctx, workspace, call.room_id, blueprint),
        )
        place = strings.ASK_PLACE_DIRECT.format(name=workspace.name)
        if session is not None:
            topic = session.topic or strings.SESSION_UNTITLED
            place = strings.ASK_PLACE.format(name=workspace.name, topic=topic)
        around = await neighbours(ctx, workspace, hits)
        shown = [h.item.event_id for h in hits if h.item.event_id]
        shown += [
            m.event_id
            for h in hits
            for side in around.get(h.item.event_id or "", ([], []))
            for m in side
        ]
        answer.shown = list(dict.fromkeys(shown))  # a memory that is also a neighbour: once
        messages = prompt.build(
            question,
            call.sender,
            bot_name=ctx.config.appservice.bot_displayname,
            place=place,
            lines=lines,
            thread=thread,
            memories=[
                prompt.Memory(
                    h.item.text,
                    h.item.kind,
                    h.item.sender,
                    h.item.created_at,
                    h.item.room_id,
                    h.item.event_id,
                    *_before_and_after(h, around),
                    place=h.item.place,
                )
                for h in hits
            ],
            budget_tokens=ctx.config.agent.context_tokens,
        )
        answer.start()  # the model is at work from here
        try:
            result = await converse(
                ctx,
                blueprint,
                messages,
                answer,
                tools=tools,
                workspace=workspace,
                room_id=call.room_id,
                asker=call.sender,
                key=question_event,
            )
        except (LLMUnavailable, UnknownModel) as e:
            if answer.text.strip():  # the model stopped half-way: keep what it wrote, say why
                await answer.fail(str(e))
                return
            await answer.finish(
                model=None,
                sources=[s for n, h in enumerate(hits, 1) if (s := source(n, h)) is not None],
                text=memory_only_text(str(e), hits, domain),
            )
            return
        done = finished.Finished(
            result.text,
            result.model,
            tuple(result.notes),
            tuple(cited_sources(result.text, hits)),
            tuple(answer.shown),
        )
        await finished.save(ctx.db, question_event, call.room_id, done)
        await answer.finish(
            model=done.model, sources=done.sources, text=done.text, notes=done.notes
        )
    except (RateLimited, BudgetExceeded, UserError) as e:
        await answer.fail(str(e))
    except HomeserverUnavailable:
        raise  # the whole event is handled again later; the answer is found and edited then
    except BaseException:
        await answer.fail(strings.ANSWER_FAILED)
        raise
    finally:
        answer.close()
