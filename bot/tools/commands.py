"""!tools and !tool NAME."""

from __future__ import annotations

import json

from bot.commands.call import CommandCall
from bot.commands.catalog import BY_NAME
from bot.core import strings
from bot.core.errors import UserError
from bot.tools.permissions import allowed_tools
from bot.workspaces.access import require_member, require_workspace


async def tools_list(call: CommandCall) -> None:
    ctx = call.ctx
    workspace = await require_workspace(ctx, call.room_id, call.sender)
    await require_member(ctx, workspace, call.sender)
    allowed = await allowed_tools(ctx, call.room_id, workspace)
    tools = ctx.tools.allowed(allowed)
    if not tools:
        await call.reply.send_notice(strings.NO_TOOLS)
        return
    lines = [strings.TOOLS_HEADER]
    for tool in tools:
        kind = strings.TOOL_WRITES if tool.writes else strings.TOOL_READS
        lines.append(
            strings.TOOL_LINE.format(name=tool.name, description=tool.description, kind=kind)
        )
    lines += ["", strings.TOOLS_FOOTER]  # not part of the list's last item
    await call.reply.send_notice("\n".join(lines))


async def tool_detail(call: CommandCall) -> None:
    ctx = call.ctx
    name = call.command.text.strip()
    if not name:
        raise UserError(strings.USAGE.format(usage=BY_NAME["tool"].usage))
    tool = ctx.tools.get(name)
    if tool is None:
        raise UserError(
            strings.UNKNOWN_TOOL.format(tool=name, tools=", ".join(sorted(ctx.tools.names())))
        )
    schema = tool.schema()["function"]["parameters"]
    required = set(schema.get("required", []))
    lines = [
        strings.TOOL_HEADER.format(
            name=tool.name, version=tool.version, description=tool.description
        )
    ]
    for arg, spec in schema.get("properties", {}).items():
        kind = spec.get("type") or "/".join(
            str(option.get("type") or option.get("format")) for option in spec.get("anyOf", [])
        )
        lines.append(
            strings.TOOL_ARG.format(
                name=arg,
                kind=kind,
                required=strings.REQUIRED if arg in required else strings.OPTIONAL,
                description=spec.get("description", ""),
            )
        )
    example = " ".join(f"{a}=…" for a in schema.get("properties", {}) if a in required)
    lines.append(strings.TOOL_EXAMPLE.format(name=tool.name, example=example))
    lines.append("```json\n" + json.dumps(schema, indent=2) + "\n```")
    await call.reply.send_notice("\n".join(lines))
