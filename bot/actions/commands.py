"""@act, !actions, !confirm, !cancel."""

from __future__ import annotations

from bot.actions.card import STATUS_WORDS
from bot.actions.instructions import propose_from_instruction
from bot.actions.store import Action, parse_code
from bot.commands.call import CommandCall
from bot.commands.catalog import BY_NAME
from bot.commands.outputs import page_number, page_of
from bot.core import strings
from bot.core.dispatcher import room_may_go_on
from bot.core.errors import PermissionDenied, UserError
from bot.tools.args import looks_like_tool_call, parse_call
from bot.tools.permissions import allowed_tools
from bot.workspaces.access import (
    current_role,
    require_member,
    require_proposer,
    require_workspace,
)
from bot.workspaces.store import Workspace


async def act(call: CommandCall) -> None:
    ctx = call.ctx
    text = call.command.text.strip()
    if not text:
        raise UserError(strings.USAGE.format(usage=BY_NAME["act"].usage))
    workspace = await require_workspace(ctx, call.room_id, call.sender)
    await require_proposer(ctx, workspace, call.sender)
    allowed = await allowed_tools(ctx, call.room_id, workspace)
    if looks_like_tool_call(text, ctx.tools.names()):
        name, args = parse_call(text)
        await ctx.actions.propose(
            workspace,
            call.room_id,
            name,
            args,
            call.sender,
            call.reply,
            request_event_id=call.reply.event_id,
            allowed=allowed,
        )
        return
    # Who may propose is decided: the room's next events need not wait for the model.
    room_may_go_on()
    await propose_from_instruction(call, workspace, text, allowed)


async def actions_list(call: CommandCall) -> None:
    ctx = call.ctx
    workspace = await require_workspace(ctx, call.room_id, call.sender)
    await require_member(ctx, workspace, call.sender)
    words = call.command.text.split()
    everything = bool(words) and words[0].lower() == "all"
    if everything:
        words = words[1:]
    page = page_number(" ".join(words), BY_NAME["actions"].usage)
    actions = await ctx.actions.store.of_workspace(workspace.id, open_only=not everything)
    if not actions:
        await call.reply.send_notice(strings.NO_ACTIONS)
        return
    lines = [
        strings.ACTION_LINE.format(
            code=a.code,
            tool=a.tool,
            status=STATUS_WORDS.get(a.status, a.status),
            by=a.requested_by,
            date=a.created_at.strftime("%Y-%m-%d %H:%M"),
        )
        for a in actions
    ]
    header = strings.ACTIONS_HEADER.format(name=workspace.name)
    command = "!actions all" if everything else "!actions"
    await call.reply.send_notice(page_of(header, lines, page=page, command=command))


async def _target(call: CommandCall, name: str) -> tuple[Action, Workspace]:
    ctx = call.ctx
    action_id = parse_code(call.command.text) if call.command.text else None
    if action_id is None:
        raise UserError(strings.USAGE.format(usage=BY_NAME[name].usage))
    action = await ctx.actions.store.get(action_id)
    workspace = await require_workspace(ctx, call.room_id, call.sender)
    if action is None or action.workspace_id != workspace.id:
        raise UserError(strings.NO_SUCH_ACTION.format(code=call.command.text.strip()))
    return action, workspace


async def _not_awaiting(call: CommandCall, action: Action) -> None:
    current = await call.ctx.actions.store.get(action.id)
    status = current.status if current else "gone"
    await call.reply.send_notice(strings.NOT_AWAITING.format(code=action.code, status=status))


async def confirm(call: CommandCall) -> None:
    """!confirm ID: what a ✅ on the card does, for clients without reactions."""
    action, workspace = await _target(call, "confirm")
    if await current_role(call.ctx, workspace, call.sender) not in ("host", "delegate"):
        raise PermissionDenied(strings.CONFIRM_WHO.format(host=workspace.host))
    if not await call.ctx.actions.confirm(action, call.sender):
        await _not_awaiting(call, action)
        return
    await call.reply.send_notice(strings.CONFIRMED.format(code=action.code))


async def cancel(call: CommandCall) -> None:
    """!cancel ID: what a ❌ on the card does."""
    action, workspace = await _target(call, "cancel")
    if not await call.ctx.actions.may_cancel(workspace, action, call.sender):
        raise PermissionDenied(strings.CANCEL_WHO.format(host=workspace.host))
    if not await call.ctx.actions.cancel(action, call.sender):
        await _not_awaiting(call, action)
        return
    await call.reply.send_notice(strings.CANCELLED.format(code=action.code))
