"""One turn of a workspace's Letta agent, streamed into a Matrix answer message.

- The question goes with its sender: the message's `name` field (what OpenAI-style models read
  as the speaker) and a first line saying who asks where.
- The tools the room's blueprint allows are offered as client-side tools. When Letta asks to run
  one, the turn stops with stop_reason `requires_approval`:
  - a read-only tool (search_docs, summarize_channel) runs at once, its result goes back as a
    tool return and the turn goes on, streaming into the same answer;
  - a writing tool becomes the same action card as @act (bot.actions), recorded with the agent
    and the tool call (letta_approvals); the answer ends saying it waits for the host's ✅.
    bot.letta.approvals sends the outcome when the card is decided;
  - a tool the room may not use gets an error return, and the agent goes on.
- Usage from Letta's usage statistics is recorded like any model call (llm_usage, provider
  `letta`).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

from letta_client import NotFoundError
from letta_client.types.agents.message_create_params import ClientTool
from letta_client.types.agents.message_create_params import Message as MessageParam

from bot.actions.flow import Actions
from bot.agent.answer import Answer, Source
from bot.agent.prompt import display_name
from bot.blueprints import Blueprint
from bot.core import strings
from bot.core.errors import LettaUnavailable, PermissionDenied, UserError
from bot.core.replies import Replier
from bot.letta.client import FAILURES, LettaClient
from bot.letta.context import LettaContext
from bot.letta.store import Approval, LettaAgent, LettaApprovalStore
from bot.letta.stream import PendingCall, TurnState
from bot.llm import CallContext
from bot.llm.pricing import PricedProvider
from bot.llm.usage import UsageRecord
from bot.tools.permissions import allowed_tools
from bot.tools.registry import Tool, ToolCall
from bot.workspaces.access import require_proposer
from bot.workspaces.store import Workspace

log = logging.getLogger(__name__)

MAX_ROUNDS = 8
"""Tool returns sent back within one turn before it is cut short."""
_NAME = re.compile(r"[^A-Za-z0-9_-]+")


class AgentGone(Exception):
    """The Letta server has no agent by this ID (404): it was deleted, or the server reset."""


@dataclass(frozen=True, slots=True)
class Turn:
    """Whom a turn answers, where, and as which agent."""

    workspace: Workspace
    room_id: str
    asker: str
    question_event: str
    blueprint: Blueprint
    agent: LettaAgent


def numbered(found: Sequence[tuple[str, str]]) -> list[Source]:
    """What the agent's searches found, numbered in the order found (at most 3 listed)."""
    return [Source(n, room, event) for n, (room, event) in enumerate(found[:3], start=1)]


def speaker_name(user_id: str) -> str:
    """A Matrix user as a message `name` (letters, digits, _ and -; at most 64)."""
    return _NAME.sub("_", display_name(user_id)).strip("_")[:64] or "user"


def question_message(asker: str, place: str, question: str) -> dict[str, Any]:
    text = f"{display_name(asker)} ({asker}) asks in {place}:\n{question}"
    return {"role": "user", "content": text, "name": speaker_name(asker)}


def tool_return(call_id: str, output: str, *, ok: bool) -> dict[str, Any]:
    return {
        "type": "tool",
        "tool_call_id": call_id,
        "status": "success" if ok else "error",
        "tool_return": output,
    }


def returns_message(returns: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Tool results for Letta: the `tool_return` message of letta-client 1.12."""
    return {
        "type": "tool_return",
        "tool_returns": [{k: v for k, v in r.items() if k != "type"} for r in returns],
    }


def client_tools(tools: Sequence[Tool]) -> list[dict[str, Any]]:
    found = []
    for tool in tools:
        function = tool.schema()["function"]
        found.append(
            {
                "name": function["name"],
                "description": function["description"],
                "parameters": function["parameters"],
            }
        )
    return found


def _model_ref(handle: str) -> tuple[str, str]:
    """A Letta model handle ("openai/gpt-4o-mini") as (provider, model) for pricing."""
    provider, _, model = handle.partition("/")
    return (provider, model) if model else ("letta", handle or "default")


class Turns:
    def __init__(
        self,
        ctx: LettaContext,
        actions: Actions,
        client: LettaClient,
        approvals: LettaApprovalStore,
    ) -> None:
        self.ctx = ctx
        self.actions = actions
        self.client = client
        self.approvals = approvals

    @property
    def model(self) -> str:
        """What the answer's org.doryo.answer.model says."""
        handle = self.client.config.model
        return f"letta/{handle}" if handle else "letta"

    async def run(
        self, turn: Turn, messages: list[dict[str, Any]], answer: Answer, reply: Replier
    ) -> None:
        """Send `messages`, stream the agent's answer into `answer` and finish it, running
        read-only tools and posting a card for a writing one. Raises LettaUnavailable (the
        answer is left to the caller then), AgentGone."""
        allowed = await allowed_tools(self.ctx, turn.room_id, turn.workspace)
        tools = self.ctx.tools.allowed(allowed)
        try:
            await require_proposer(self.ctx, turn.workspace, turn.asker)
        except PermissionDenied:
            # Who may propose actions holds for an agent asked on their behalf too.
            tools = [t for t in tools if not t.writes]
        offered = client_tools(tools)
        sources: list[tuple[str, str]] = []
        for _ in range(MAX_ROUNDS):
            state = await self._stream(turn, messages, offered, answer)
            if not state.requires_approval:
                await answer.finish(model=self.model, sources=numbered(sources))
                return
            returns, card = await self._handle(turn, state, tools, allowed, reply, sources)
            if card is not None:
                note = strings.LETTA_AWAITING.format(code=card)
                await answer.finish(
                    model=self.model,
                    sources=numbered(sources),
                    text=f"{answer.text.strip()}\n\n{note}",
                )
                return
            messages = [returns_message(returns)]
        await answer.fail(strings.LETTA_AGENT_ERROR.format(reason="too many tool calls"))

    async def _stream(
        self,
        turn: Turn,
        messages: list[dict[str, Any]],
        offered: list[dict[str, Any]],
        answer: Answer,
    ) -> TurnState:
        state = TurnState()
        started = time.monotonic()
        first: float | None = None
        try:
            stream = await self.client.sdk.agents.messages.create(
                turn.agent.agent_id,
                messages=cast("list[MessageParam]", messages),
                client_tools=cast("list[ClientTool]", offered),
                streaming=True,
                stream_tokens=True,
                include_pings=True,
            )
            async with stream:
                async for event in stream:
                    added = state.add(event)
                    if added:
                        first = first or time.monotonic()
                        await answer.append(added)
        except NotFoundError as e:
            self._record(turn, state, started, first, error=str(e))
            raise AgentGone(turn.agent.agent_id) from None
        except FAILURES as e:
            self._record(turn, state, started, first, error=f"{type(e).__name__}: {e}")
            raise self.client.error(e) from None
        self._record(turn, state, started, first, error=state.error)
        if state.error is not None:
            reason = strings.LETTA_AGENT_ERROR.format(reason=state.error)
            raise LettaUnavailable(reason, reachable=True)
        return state

    def _record(
        self,
        turn: Turn,
        state: TurnState,
        started: float,
        first: float | None,
        *,
        error: str | None,
    ) -> None:
        """The turn's usage in llm_usage, like any model call (priced by the model handle)."""
        provider, model = _model_ref(self.client.config.model)
        cost: Decimal | None = None
        if error is None:
            priced = PricedProvider(provider, "", local=False)
            cost = self.ctx.llm.pricing.cost(priced, model, state.usage)
        context = CallContext(
            agent=turn.blueprint.code,
            blueprint_version=turn.blueprint.version,
            workspace_id=turn.workspace.id,
            room_id=turn.room_id,
            user_id=turn.asker,
        )
        self.ctx.llm.record(
            UsageRecord(
                provider="letta",
                model=self.client.config.model or "default",
                usage=state.usage,
                cost_usd=cost,
                latency_ms=int((time.monotonic() - started) * 1000),
                ttft_ms=int((first - started) * 1000) if first is not None else None,
                streamed=True,
                context=context,
                outcome="ok" if error is None else "error",
                error=error[:500] if error else None,
            )
        )

    async def _handle(
        self,
        turn: Turn,
        state: TurnState,
        tools: Sequence[Tool],
        allowed: set[str],
        reply: Replier,
        sources: list[tuple[str, str]],
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The tool calls Letta asked for: (their returns, the code of the card posted if one
        was). With a card, the returns are kept to go with the card's outcome."""
        returns: list[dict[str, Any]] = []
        writing: list[tuple[PendingCall, Tool]] = []
        by_name = {t.name: t for t in tools}
        for n, call in enumerate(state.calls.values()):
            tool = by_name.get(call.name)
            if tool is None:
                output = strings.LETTA_TOOL_NOT_ALLOWED.format(tool=call.name)
                returns.append(tool_return(call.tool_call_id, output, ok=False))
            elif tool.writes:
                writing.append((call, tool))
            else:
                key = f"{turn.question_event}.{call.tool_call_id}.{n}"
                returns.append(await self._read(turn, tool, call, key, sources))
        for index, (call, tool) in enumerate(writing):
            later = [
                tool_return(c.tool_call_id, strings.LETTA_ONE_ACTION.format(tool=c.name), ok=False)
                for c, _ in writing[index + 1 :]
            ]
            try:
                code = await self._card(
                    turn, state, call, tool, allowed, reply, [*returns, *later]
                )
            except UserError as e:
                # Refused before any card (bad arguments, a missing account): the agent is told.
                output = strings.LETTA_TOOL_FAILED.format(error=e)
                returns.append(tool_return(call.tool_call_id, output, ok=False))
                continue
            return [], code
        return returns, None

    async def _read(
        self,
        turn: Turn,
        tool: Tool,
        call: PendingCall,
        key: str,
        sources: list[tuple[str, str]],
    ) -> dict[str, Any]:
        """A read-only tool, run at once (as during a native answer)."""
        try:
            args = tool.validate(call.arguments)
            run = ToolCall(self.ctx, turn.workspace, turn.room_id, turn.asker, None, key)
            result = await tool.run(run, args)
        except UserError as e:
            return tool_return(
                call.tool_call_id, strings.LETTA_TOOL_FAILED.format(error=e), ok=False
            )
        for found in result.data.get("results", []):
            if isinstance(found, dict) and found.get("event_id"):
                pair = (str(found.get("room_id") or turn.room_id), str(found["event_id"]))
                if pair not in sources:
                    sources.append(pair)
        return tool_return(call.tool_call_id, result.summary, ok=True)

    async def _card(
        self,
        turn: Turn,
        state: TurnState,
        call: PendingCall,
        tool: Tool,
        allowed: set[str],
        reply: Replier,
        other_returns: list[dict[str, Any]],
    ) -> str:
        """Post the action card for a writing tool call; returns its code. UserError: refused
        (its arguments, or what the tool needs), and no card posted."""
        key = f"{turn.question_event}/{call.tool_call_id}"
        # Recorded before the card exists: a ✅ can come as soon as it is posted.
        await self.approvals.add(
            Approval(
                request_key=key,
                agent_id=turn.agent.agent_id,
                tool_call_id=call.tool_call_id,
                request_message_id=state.request_message_id,
                other_returns=other_returns,
                question_event_id=turn.question_event,
                asked_by=turn.asker,
                blueprint=turn.blueprint.code,
                blueprint_version=turn.blueprint.version,
            )
        )
        try:
            action = await self.actions.propose(
                turn.workspace,
                turn.room_id,
                tool.name,
                call.arguments,
                turn.asker,
                reply,
                request_event_id=key,
                source="letta",
                allowed=allowed,
                reply_to=turn.question_event,
            )
        except UserError:
            await self.approvals.remove(key)
            raise
        return action.code
