"""From a parsed request to its handler: the explicit command table, and !help, which shows it.

A command of the catalog without a handler here answers "not available yet": nothing a person
types that looks like one of our commands goes unanswered.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from bot.actions import commands as actions
from bot.agent import ask, catchup
from bot.agent import commands as agent
from bot.blueprints import commands as blueprints
from bot.commands import basic
from bot.commands.call import CommandCall, CommandHandler
from bot.commands.catalog import BY_NAME, COMMANDS, CommandSpec, subcommands
from bot.commands.parser import Act, Ask, Command, Request, UnknownCommand
from bot.composio import commands as composio
from bot.core import strings
from bot.core.replies import Replier
from bot.data import commands as data
from bot.data import deletion
from bot.documents import commands as documents
from bot.memory import commands as memory
from bot.sessions import adoption
from bot.sessions import commands as sessions
from bot.tasklist import commands as tasklist
from bot.tools import commands as tools
from bot.workspaces import commands as ws

if TYPE_CHECKING:
    from bot.context import Context

log = logging.getLogger(__name__)


def help_text(*, encryption: bool = False) -> str:
    """Every command people can run, one a line, each with who may run it: a group (`!ws …`)
    is shown as its subcommands, whose roles differ."""
    lines = [strings.HELP_HEADER]
    lines += [_help_line(c) for c in COMMANDS if not subcommands(c.name)]
    footer = strings.HELP_ENCRYPTED if encryption else strings.HELP_NOT_ENCRYPTED
    lines += ["", f"{strings.HELP_FOOTER} {footer}"]
    return "\n".join(lines)


async def help_command(call: CommandCall) -> None:
    wanted = " ".join(call.command.args).lower().lstrip("!@/")
    if not wanted:
        await call.reply.send_notice(help_text(encryption=call.ctx.encryption is not None))
        return
    command = BY_NAME.get(wanted)
    if command is None:
        await call.reply.send_notice(strings.HELP_UNKNOWN.format(name=wanted))
        return
    first = strings.HELP_COMMAND.format(
        usage=command.usage, summary=command.summary, who=command.who
    )
    subs = subcommands(command.name)
    if not subs and not is_available(command.name):
        first += strings.NOT_AVAILABLE_TAG
    await call.reply.send_notice("\n".join([first, *(_help_line(s) for s in subs)]))


HANDLERS: dict[str, CommandHandler] = {
    "help": help_command,
    "ping": basic.ping,
    "ws": ws.ws_group,
    "ws create": ws.ws_create,
    "ws invite": ws.ws_invite,
    "ws invites": ws.ws_invites,
    "ws join": ws.ws_join,
    "ws members": ws.ws_members,
    "ws forget": ws.ws_forget,
    "ws export": data.ws_export,
    "ws delete": deletion.ws_delete,
    "ws delegate": ws.ws_delegate,
    "ws undelegate": ws.ws_undelegate,
    "ws settings": ws.ws_settings,
    "ws use": ws.ws_use,
    "session": sessions.session_group,
    "session start": sessions.session_start,
    "session end": sessions.session_end,
    "session history": adoption.session_history,
    "sessions": sessions.sessions_list,
    "ask": ask.ask,
    "remember": memory.remember,
    "forget": memory.forget,
    "memory": memory.search,
    "agent": agent.agent,
    "agent use": agent.agent_use,
    "usage": agent.usage,
    "catchup": catchup.catchup,
    "docs": documents.docs,
    "blueprint": blueprints.blueprint_group,
    "blueprint list": blueprints.blueprint_list,
    "blueprint show": blueprints.blueprint_show,
    "blueprint create": blueprints.blueprint_create,
    "blueprint edit": blueprints.blueprint_edit,
    "blueprint history": blueprints.blueprint_history,
    "blueprint rollback": blueprints.blueprint_rollback,
    "act": actions.act,
    "actions": actions.actions_list,
    "confirm": actions.confirm,
    "cancel": actions.cancel,
    "tools": tools.tools_list,
    "tool": tools.tool_detail,
    "connect": composio.connect,
    "connections": composio.connections,
    "disconnect": composio.disconnect,
    "tasks": tasklist.tasks_list,
    "task": tasklist.task_group,
    "task done": tasklist.task_done,
}


def is_available(name: str) -> bool:
    """A command works if it has a handler, or is a group with a working subcommand."""
    return name in HANDLERS or any(s.name in HANDLERS for s in subcommands(name))


def _help_line(command: CommandSpec) -> str:
    who = strings.HELP_WHO.format(who=command.who)
    line = strings.HELP_LINE.format(usage=command.usage, summary=command.summary, who=who)
    return line if is_available(command.name) else line + strings.NOT_AVAILABLE_TAG


async def dispatch(
    ctx: Context,
    request: Request,
    *,
    room_id: str,
    event: dict[str, Any],
    reply: Replier,
    age_ms: int,
) -> None:
    if isinstance(request, UnknownCommand):
        ctx.metrics.commands.labels("unknown").inc()
        await reply.send_notice(strings.UNKNOWN_COMMAND.format(word=request.word))
        return
    if isinstance(request, Ask):
        request = Command("ask", request.question)
    elif isinstance(request, Act):
        request = Command("act", request.instruction)
    name = request.name
    ctx.metrics.commands.labels(name).inc()
    handler = HANDLERS.get(name)
    if handler is None:
        usage = BY_NAME[name].usage if name in BY_NAME else f"!{name}"
        await reply.send_notice(strings.NOT_AVAILABLE.format(usage=usage))
        return
    call = CommandCall(
        ctx=ctx,
        room_id=room_id,
        sender=str(event["sender"]),
        event=event,
        command=request,
        reply=reply,
        age_ms=age_ms,
    )
    await handler(call)
