"""!tasks and !task done ID."""

from __future__ import annotations

from bot.commands.call import CommandCall
from bot.commands.catalog import BY_NAME
from bot.commands.outputs import inline, page_number, page_of
from bot.core import strings
from bot.core.errors import UserError
from bot.workspaces.access import require_member, require_workspace


async def tasks_list(call: CommandCall) -> None:
    ctx = call.ctx
    workspace = await require_workspace(ctx, call.room_id, call.sender)
    await require_member(ctx, workspace, call.sender)
    page = page_number(call.command.text, BY_NAME["tasks"].usage)
    tasks = await ctx.tasklist.of_workspace(workspace.id)
    if not tasks:
        await call.reply.send_notice(strings.NO_TASKS.format(name=workspace.name))
        return
    lines = []
    for task in tasks:
        extra = []
        if task.assignee:
            extra.append(task.assignee)
        if task.due:
            extra.append(strings.TASK_DUE.format(due=task.due.isoformat()))
        lines.append(
            strings.TASK_LINE.format(
                id=task.id,
                title=inline(task.title, 200),
                extra=f" ({', '.join(extra)})" if extra else "",
            )
        )
    header = strings.TASKS_HEADER.format(name=workspace.name)
    await call.reply.send_notice(page_of(header, lines, page=page, command="!tasks"))


async def task_group(call: CommandCall) -> None:
    raise UserError(strings.USAGE.format(usage=BY_NAME["task done"].usage))


async def task_done(call: CommandCall) -> None:
    ctx = call.ctx
    raw = call.command.text.strip().lstrip("#")
    if not raw.isdigit():
        raise UserError(strings.USAGE.format(usage=BY_NAME["task done"].usage))
    workspace = await require_workspace(ctx, call.room_id, call.sender)
    await require_member(ctx, workspace, call.sender)
    if not await ctx.tasklist.mark_done(workspace.id, int(raw), call.sender):
        raise UserError(strings.NO_SUCH_TASK.format(id=raw))
    await call.reply.send_notice(strings.TASK_DONE.format(id=raw))
