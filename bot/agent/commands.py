"""!agent, !agent use CODE[@VERSION], !usage [7d|30d]."""

from __future__ import annotations

from decimal import Decimal

from bot.agent.choice import blueprint_for, parse_ref
from bot.commands.call import CommandCall
from bot.commands.catalog import BY_NAME
from bot.core import strings
from bot.core.errors import UserError
from bot.workspaces.access import require_host, require_member, require_workspace


async def agent(call: CommandCall) -> None:
    ctx = call.ctx
    workspace = await require_workspace(ctx, call.room_id, call.sender)
    await require_member(ctx, workspace, call.sender)
    session = await ctx.sessions.get(call.room_id)
    blueprint = await blueprint_for(ctx.blueprints, workspace, session)
    source = (
        strings.AGENT_SOURCE_SESSION
        if session is not None and session.agent
        else strings.AGENT_SOURCE_WORKSPACE
    )
    model = blueprint.model or strings.AGENT_DEFAULT_MODEL.format(
        model=ctx.config.llm.default_model
    )
    await call.reply.send_notice(
        strings.AGENT_HERE.format(
            name=blueprint.name,
            ref=blueprint.ref,
            source=source,
            model=model,
            tools=", ".join(f"`{t}`" for t in blueprint.tools) or strings.NONE,
        )
    )


async def agent_use(call: CommandCall) -> None:
    ctx = call.ctx
    ref = call.command.text.strip()
    if not ref:
        raise UserError(strings.USAGE.format(usage=BY_NAME["agent use"].usage))
    session = await ctx.sessions.get(call.room_id)
    if session is None:
        raise UserError(strings.AGENT_USE_WHERE)
    workspace = await ctx.workspaces.get(session.workspace_id)
    assert workspace is not None
    await require_host(ctx, workspace, call.sender)
    code, version = parse_ref(ref)
    blueprint = await ctx.blueprints.get(code, version)  # BlueprintError says what is missing
    chosen = blueprint.code if version is None else blueprint.ref
    await ctx.sessions.set_agent(session.room_id, chosen)
    await call.reply.send_notice(strings.AGENT_USING.format(name=blueprint.name, ref=chosen))


def _days(text: str) -> int:
    cleaned = text.strip().lower()
    if cleaned in ("", "7", "7d"):
        return 7
    if cleaned in ("30", "30d"):
        return 30
    raise UserError(strings.USAGE_PERIOD)


async def usage(call: CommandCall) -> None:
    ctx = call.ctx
    days = _days(call.command.text)
    workspace = await require_workspace(ctx, call.room_id, call.sender)
    await require_member(ctx, workspace, call.sender)
    rows = await ctx.llm.usage.summary(days=days, workspace_id=workspace.id)
    if not rows:
        await call.reply.send_notice(strings.USAGE_NONE.format(name=workspace.name, days=days))
        return
    lines = [
        strings.USAGE_HEADER.format(name=workspace.name, days=days),
        "",
        strings.USAGE_TABLE_HEAD,
    ]
    total = Decimal(0)
    for row in rows:
        total += row.cost_usd
        lines.append(
            strings.USAGE_LINE.format(
                agent=row.agent or "—",
                model=row.model,
                calls=row.calls,
                tokens_in=row.input_tokens,
                tokens_out=row.output_tokens,
                cost=f"{row.cost_usd:.4f}",
                errors=row.failures,
            )
        )
    lines += [
        "",
        strings.USAGE_TOTAL.format(calls=sum(r.calls for r in rows), cost=f"{total:.4f}"),
    ]
    await call.reply.send_notice("\n".join(lines))
