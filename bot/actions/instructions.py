"""`@act INSTRUCTION`: the agent turns words into one proposed tool call — a card, never a run.

The model sees the tools the room's blueprint allows and the recent conversation. Whatever it
answers (including what a message in the room may have told it to do), the result is at most a
card that waits for the host's ✅: the model has no way to run a writing tool itself.
"""

from __future__ import annotations

from bot.agent import prompt
from bot.agent.ask import recent_lines, schemas, workspace_limits
from bot.agent.choice import blueprint_for
from bot.commands.call import CommandCall
from bot.core import strings
from bot.core.errors import LLMUnavailable, UnknownModel, UserError
from bot.llm import CallContext, Message
from bot.workspaces.store import Workspace

_INSTRUCTIONS = (
    "Turn the request below into exactly one call of one of your tools, with its arguments. "
    "Nothing runs until the workspace host confirms it, so propose what was asked, not more. "
    "If no tool fits, answer in one sentence why."
)


async def propose_from_instruction(
    call: CommandCall, workspace: Workspace, instruction: str, allowed: set[str] | None
) -> None:
    ctx = call.ctx
    tools = ctx.tools.allowed(allowed)
    session = await ctx.sessions.get(call.room_id)
    blueprint = await blueprint_for(ctx.blueprints, workspace, session)
    lines = await recent_lines(ctx, call.room_id, call.reply.event_id)
    messages = prompt.build(
        instruction,
        call.sender,
        bot_name=ctx.config.appservice.bot_displayname,
        place=strings.ASK_PLACE.format(
            name=workspace.name, topic=session.topic if session else strings.SESSION_UNTITLED
        ),
        lines=lines,
        memories=[],
        budget_tokens=ctx.config.agent.context_tokens // 2,
    )
    messages.insert(1, Message.system(_INSTRUCTIONS))
    request = blueprint.request(
        messages,
        context=CallContext(workspace_id=workspace.id, room_id=call.room_id, user_id=call.sender),
        tools=schemas(tools),
        limits=workspace_limits(workspace),
    )
    try:
        result = await ctx.llm.chat(request)
    except (LLMUnavailable, UnknownModel) as e:
        names = ", ".join(sorted(t.name for t in tools))
        raise UserError(f"{e} " + strings.ACT_NEEDS_MODEL.format(tools=names)) from None
    if not result.tool_calls:
        raise UserError(strings.ACT_NO_TOOL.format(text=result.text.strip() or "—"))
    first = result.tool_calls[0]
    await ctx.actions.propose(
        workspace,
        call.room_id,
        first.name,
        dict(first.arguments),
        call.sender,
        call.reply,
        request_event_id=call.reply.event_id,
        source="agent",
        allowed=allowed,
    )
    if len(result.tool_calls) > 1:
        await call.reply.send_notice(strings.ACT_SEVERAL.format(count=len(result.tool_calls)))
