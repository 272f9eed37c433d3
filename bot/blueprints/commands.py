"""!blueprint list | show | create | edit | history | rollback.

Blueprints are shared by every workspace of this Doryo, so changing them — create, edit and
also rollback — is for the configured admins (bot.admins); hosts may look at them.
"""

from __future__ import annotations

import re

from ruamel.yaml import YAML

from bot.agent.choice import parse_ref
from bot.commands.call import CommandCall
from bot.commands.catalog import BY_NAME
from bot.core import strings
from bot.core.errors import PermissionDenied, UserError
from bot.workspaces.access import require_host, require_workspace

from . import parse_yaml

_FENCE = re.compile(r"^```(?:ya?ml)?\s*\n(.*?)\n?```\s*$", re.S)


def _usage(name: str) -> UserError:
    return UserError(strings.USAGE.format(usage=BY_NAME[name].usage))


async def _host_here(call: CommandCall) -> None:
    workspace = await require_workspace(call.ctx, call.room_id, call.sender)
    await require_host(call.ctx, workspace, call.sender)


def _admin(call: CommandCall) -> None:
    if not any(re.fullmatch(p, call.sender) for p in call.ctx.config.bot.admins):
        raise PermissionDenied(strings.BLUEPRINT_ADMINS_ONLY)


def _spec_text(call: CommandCall) -> tuple[str | None, str]:
    """CODE (optional) on the command's line, the YAML below it (code fences allowed)."""
    first, _, rest = call.command.text.partition("\n")
    code = first.strip() or None
    if code and (":" in code or " " in code):  # the YAML started on the command's line
        code, rest = None, call.command.text
    rest = rest.strip()
    if match := _FENCE.match(rest):
        rest = match[1]
    return code, rest


async def blueprint_group(call: CommandCall) -> None:
    raise _usage("blueprint")


async def blueprint_list(call: CommandCall) -> None:
    await _host_here(call)
    blueprints = await call.ctx.blueprints.list()
    lines = [strings.BLUEPRINTS_HEADER]
    lines += [
        strings.BLUEPRINT_LINE.format(
            code=b.code, version=b.version, name=b.name, description=b.description
        )
        for b in blueprints
    ]
    await call.reply.send_notice("\n".join(lines))


async def blueprint_show(call: CommandCall) -> None:
    if not call.command.text.strip():
        raise _usage("blueprint show")
    await _host_here(call)
    code, version = parse_ref(call.command.text)
    blueprint = await call.ctx.blueprints.get(code, version)
    spec = dict(blueprint.spec)
    text = _dump(spec)
    await call.reply.send_notice(
        strings.BLUEPRINT_SHOW.format(name=blueprint.name, ref=blueprint.ref, yaml=text)
    )


def _dump(spec: dict[str, object]) -> str:
    import io

    out = io.StringIO()
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.dump(spec, out)
    return out.getvalue().strip()


async def blueprint_create(call: CommandCall) -> None:
    _admin(call)
    code, text = _spec_text(call)
    if not text:
        raise _usage("blueprint create")
    spec = parse_yaml(text)
    if code is not None:
        spec.setdefault("code", code)
    blueprint = await call.ctx.blueprints.create(spec, by=call.sender)
    await call.reply.send_notice(
        strings.BLUEPRINT_CREATED.format(name=blueprint.name, ref=blueprint.ref)
    )


async def blueprint_edit(call: CommandCall) -> None:
    _admin(call)
    code, text = _spec_text(call)
    if not text:
        raise _usage("blueprint edit")
    changes = parse_yaml(text)
    code = code or str(changes.get("code") or "")
    if not code:
        raise _usage("blueprint edit")
    before = await call.ctx.blueprints.get(code)
    after = await call.ctx.blueprints.edit(code, changes, by=call.sender)
    template = (
        strings.BLUEPRINT_EDITED
        if after.version != before.version
        else (strings.BLUEPRINT_UNCHANGED)
    )
    await call.reply.send_notice(template.format(name=after.name, ref=after.ref))


async def blueprint_history(call: CommandCall) -> None:
    code = call.command.text.strip().lower()
    if not code:
        raise _usage("blueprint history")
    await _host_here(call)
    versions = await call.ctx.blueprints.history(code)
    lines = [strings.BLUEPRINT_HISTORY_HEADER.format(code=code)]
    lines += [
        strings.BLUEPRINT_VERSION_LINE.format(
            version=v.version,
            current=strings.BLUEPRINT_CURRENT if v.current else "",
            date=v.created_at.strftime("%Y-%m-%d %H:%M"),
            by=v.created_by or v.source,
        )
        for v in versions
    ]
    await call.reply.send_notice("\n".join(lines))


async def blueprint_rollback(call: CommandCall) -> None:
    _admin(call)
    args = call.command.args
    if len(args) != 2 or not args[1].isdigit():
        raise _usage("blueprint rollback")
    blueprint = await call.ctx.blueprints.rollback(args[0].lower(), int(args[1]), by=call.sender)
    await call.reply.send_notice(
        strings.BLUEPRINT_ROLLED_BACK.format(name=blueprint.name, ref=blueprint.ref)
    )
