"""!session start, !session end, !sessions."""

from __future__ import annotations

from appservice.errors import MatrixRequestError
from bot.agent.summary import remember_summary, summarize
from bot.commands.call import CommandCall
from bot.commands.catalog import BY_NAME
from bot.commands.outputs import inline, page_number, page_of
from bot.core import strings
from bot.core.errors import UserError
from bot.rooms.joining import publish_commands
from bot.sessions.rooms import room_link, start_session
from bot.workspaces.access import require_host, require_member, require_workspace


async def session_group(call: CommandCall) -> None:
    await call.reply.send_notice(
        strings.USAGE.format(usage=BY_NAME["session"].usage)
        + "\n"
        + strings.SEE_HELP.format(command="session")
    )


async def session_start(call: CommandCall) -> None:
    ctx = call.ctx
    workspace = await require_workspace(ctx, call.room_id, call.sender)
    await require_member(ctx, workspace, call.sender)
    topic = call.command.text.strip().strip("\"'").strip()
    if len(topic) > 200:
        raise UserError(strings.TOPIC_TOO_LONG)
    try:
        session = await start_session(ctx, workspace, topic, call.sender, call.reply.event_id)
    except MatrixRequestError as e:
        if e.errcode == "M_FORBIDDEN":
            raise UserError(strings.NEED_POWER) from None
        raise
    domain = ctx.config.homeserver.domain
    name = topic or strings.SESSION_UNTITLED
    welcome = strings.SESSION_WELCOME.format(topic=name, name=workspace.name, by=call.sender)
    await call.reply.send_notice(welcome, reply_to=None, room_id=session.room_id)
    await publish_commands(ctx, session.room_id)
    await call.reply.send_notice(
        strings.SESSION_STARTED.format(topic=name, link=room_link(session.room_id, domain))
    )


async def session_end(call: CommandCall) -> None:
    ctx = call.ctx
    session = await ctx.sessions.get(call.room_id)
    if session is None:
        raise UserError(strings.NOT_A_SESSION)
    workspace = await ctx.workspaces.get(session.workspace_id)
    assert workspace is not None
    await require_host(ctx, workspace, call.sender)
    if not session.active:
        raise UserError(strings.SESSION_ALREADY_ENDED)
    summary = await summarize(ctx, session, workspace)
    if not await ctx.sessions.end(session.room_id, call.sender, summary):
        raise UserError(strings.SESSION_ALREADY_ENDED)
    await remember_summary(ctx, session, summary)
    await call.reply.send_notice(strings.SESSION_ENDED.format(summary=summary))


async def sessions_list(call: CommandCall) -> None:
    ctx = call.ctx
    workspace = await require_workspace(ctx, call.room_id, call.sender)
    await require_member(ctx, workspace, call.sender)
    page = page_number(call.command.text, BY_NAME["sessions"].usage)
    domain = ctx.config.homeserver.domain
    sessions = await ctx.sessions.of_workspace(workspace.id)
    if not sessions:
        await call.reply.send_notice(strings.NO_SESSIONS.format(name=workspace.name))
        return
    lines = []
    for session in sessions:
        lines.append(
            strings.SESSION_LINE.format(
                topic=inline(session.topic or strings.SESSION_UNTITLED, 120),
                link=room_link(session.room_id, domain),
                status=strings.ACTIVE if session.active else strings.ENDED,
                date=session.started_at.strftime("%Y-%m-%d"),
            )
        )
    header = strings.SESSIONS_HEADER.format(name=workspace.name)
    await call.reply.send_notice(page_of(header, lines, page=page, command="!sessions"))
