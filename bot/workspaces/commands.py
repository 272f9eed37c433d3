"""!ws create, invite, join, members, delegate, undelegate, settings, use."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from appservice.errors import MatrixRequestError
from appservice.matrix import pill
from bot.commands.call import CommandCall
from bot.commands.catalog import BY_NAME
from bot.commands.outputs import page_number, page_of
from bot.commands.parser import number
from bot.core import strings
from bot.core.errors import PermissionDenied, UserError
from bot.data.forget import forget_in_workspace
from bot.rooms.members import is_dm
from bot.workspaces import invites, retention, settings
from bot.workspaces.access import current_role, require_host, require_workspace
from bot.workspaces.departures import take_power_everywhere
from bot.workspaces.roles import DELEGATE_LEVEL
from bot.workspaces.spaces import (
    create_workspace,
    invite_everywhere,
    may_create,
    set_role_level,
    space_membership,
)
from bot.workspaces.store import Workspace

_USER_ID = re.compile(r"^@[^:\s]+:\S+$")
DEFAULT_CODE_USES = 1
DEFAULT_CODE_DAYS = 7
JOIN_FAILURES_ALLOWED = 5
JOIN_FAILURE_WINDOW = 900  # seconds


def _usage(name: str) -> UserError:
    return UserError(strings.USAGE.format(usage=BY_NAME[name].usage))


def _explained(error: MatrixRequestError) -> Exception:
    """A refusal for lack of power, in words for the room; any other refusal as it is."""
    return UserError(strings.NEED_POWER) if error.errcode == "M_FORBIDDEN" else error


async def ws_group(call: CommandCall) -> None:
    """`!ws` alone or with an unknown subcommand: show the subcommands."""
    lines = [strings.USAGE.format(usage=BY_NAME["ws"].usage)]
    await call.reply.send_notice("\n".join(lines) + "\n" + strings.SEE_HELP.format(command="ws"))


async def ws_create(call: CommandCall) -> None:
    name = call.command.text.strip().strip("\"'").strip()
    if not name:
        raise _usage("ws create")
    if len(name) > 80:
        raise UserError(strings.NAME_TOO_LONG)
    if not may_create(call.ctx, call.sender):
        raise PermissionDenied(strings.CREATE_NOT_ALLOWED)
    workspace = await create_workspace(call.ctx, name, call.sender, call.reply.event_id)
    if await is_dm(call.ctx, call.room_id):
        await call.ctx.workspaces.set_direct_choice(call.sender, workspace.id)
    await call.reply.send_notice(strings.WS_CREATED.format(name=name))


def _code_options(args: tuple[str, ...]) -> tuple[int, timedelta]:
    uses, days = DEFAULT_CODE_USES, DEFAULT_CODE_DAYS
    for arg in args:
        if (n := number(arg)) is not None and 0 < n <= 1000:
            uses = n
        elif arg.endswith("d") and (n := number(arg[:-1])) is not None and 0 < n <= 365:
            days = n
        else:
            raise UserError(strings.INVITE_OPTIONS)
    return uses, timedelta(days=days)


async def ws_invite(call: CommandCall) -> None:
    ctx = call.ctx
    workspace = await require_workspace(ctx, call.room_id, call.sender)
    await require_host(ctx, workspace, call.sender)
    if call.command.args[:1] == ("revoke",):
        await _revoke(call, workspace, call.command.args[1:])
        return
    users = [a for a in call.command.args if a.startswith("@")]
    if users:
        bad = [u for u in users if not _USER_ID.match(u)]
        if bad or len(users) != len(call.command.args):
            raise UserError(strings.NOT_USER_IDS.format(bad=", ".join(bad or call.command.args)))
        try:
            invited = {u: await invite_everywhere(ctx, workspace, u) for u in users}
        except MatrixRequestError as e:
            raise _explained(e) from None
        sessions = max(
            (len([r for r in rs if r != workspace.space_id]) for rs in invited.values()),
            default=0,
        )
        await call.reply.send_notice(
            strings.INVITED.format(users=", ".join(users), name=workspace.name, sessions=sessions)
        )
        return
    uses, valid_for = _code_options(call.command.args)
    code = invites.new_code()
    expires = datetime.now(UTC) + valid_for
    await ctx.workspaces.add_invite(
        workspace.id, invites.code_hash(code), invites.hint(code), call.sender, uses, expires
    )
    await call.reply.send_notice(
        strings.INVITE_CODE.format(
            code=code,
            name=workspace.name,
            uses=strings.ONCE if uses == 1 else strings.TIMES.format(n=uses),
            expires=expires.strftime("%Y-%m-%d %H:%M UTC"),
            bot=ctx.bot_user_id,
        )
    )


async def ws_invites(call: CommandCall) -> None:
    """The workspace's open codes: their first group, uses left, expiry and who made them."""
    ctx = call.ctx
    workspace = await require_workspace(ctx, call.room_id, call.sender)
    await require_host(ctx, workspace, call.sender)
    page = page_number(call.command.text, BY_NAME["ws invites"].usage)
    codes = await ctx.workspaces.open_invites(workspace.id)
    if not codes:
        await call.reply.send_notice(strings.NO_INVITES.format(name=workspace.name))
        return
    lines = []
    for code in codes:
        uses = (
            strings.USE_LEFT if code.uses_left == 1 else strings.USES_LEFT.format(n=code.uses_left)
        )
        lines.append(
            strings.INVITE_LINE.format(
                hint=f"{code.hint}-…" if code.hint else strings.INVITE_LINE_OLD,
                uses=uses,
                expires=code.expires_at.strftime("%Y-%m-%d %H:%M UTC"),
                by=code.created_by,
            )
        )
    header = strings.INVITES_HEADER.format(name=workspace.name)
    await call.reply.send_notice(page_of(header, lines, page=page, command="!ws invites"))


async def _revoke(call: CommandCall, workspace: Workspace, args: tuple[str, ...]) -> None:
    """`!ws invite revoke CODE`: the whole code, or its first group if no other open code of the
    workspace shares it."""
    if len(args) != 1:
        raise UserError(strings.INVITE_REVOKE_USAGE)
    given = args[0]
    codes = await call.ctx.workspaces.open_invites(workspace.id)
    canonical = invites.normalize(given)
    if canonical is not None:
        wanted = invites.code_hash(canonical)
        found, status = await call.ctx.workspaces.find_invite(wanted)
        matches = [c for c in codes if found is not None and c.id == found.id]
        hint = invites.hint(canonical)
    else:
        typed = invites.normalize_hint(given)
        if typed is None:
            raise UserError(strings.INVITE_REVOKE_USAGE)
        hint = typed
        matches = [c for c in codes if c.hint == hint]
    if not matches:
        raise UserError(strings.INVITE_NOT_FOUND.format(name=workspace.name, hint=hint))
    if len(matches) > 1:
        raise UserError(strings.INVITE_AMBIGUOUS.format(hint=hint))
    await call.ctx.workspaces.revoke_invite(matches[0].id)
    await call.reply.send_notice(strings.INVITE_REVOKED.format(hint=hint, name=workspace.name))


async def ws_join(call: CommandCall) -> None:
    ctx = call.ctx
    if not call.command.text:
        raise _usage("ws join")
    failures_key = ctx.redis_key("ws-join-failures", call.sender)
    failures = int(await ctx.redis.get(failures_key) or 0)
    if failures >= JOIN_FAILURES_ALLOWED:
        ttl = max(await ctx.redis.ttl(failures_key), 1)
        raise UserError(strings.JOIN_TOO_MANY.format(minutes=(ttl + 59) // 60))
    canonical = invites.normalize(call.command.text)
    invite, status = (None, "unknown")
    if canonical is not None:
        invite, status = await ctx.workspaces.find_invite(invites.code_hash(canonical))
    if invite is None:
        async with ctx.redis.pipeline(transaction=True) as pipe:
            pipe.incr(failures_key)
            pipe.expire(failures_key, JOIN_FAILURE_WINDOW, nx=True)
            await pipe.execute()
        raise UserError(_CODE_REFUSALS.get(status, strings.CODE_UNKNOWN))
    workspace = await ctx.workspaces.get(invite.workspace_id)
    assert workspace is not None
    # Who the space says they are now: a ban holds against any code, a member spends none.
    now = await space_membership(ctx, workspace, call.sender)
    if now == "ban":
        raise PermissionDenied(strings.BANNED_FROM.format(name=workspace.name))
    if now == "join":
        await call.reply.send_notice(strings.ALREADY_MEMBER.format(name=workspace.name))
        return
    if not await ctx.workspaces.spend_invite(invite.id, call.reply.event_id, call.sender):
        raise UserError(strings.CODE_USED)
    try:
        await invite_everywhere(ctx, workspace, call.sender)
    except MatrixRequestError as e:
        await ctx.workspaces.give_back_invite(call.reply.event_id)
        raise UserError(
            strings.INVITE_FAILED.format(name=workspace.name, reason=e.errcode)
        ) from None
    except UserError:
        await ctx.workspaces.give_back_invite(call.reply.event_id)
        raise
    await call.reply.send_notice(strings.JOINED.format(name=workspace.name))


_CODE_REFUSALS = {
    "expired": strings.CODE_EXPIRED,
    "used": strings.CODE_USED,
    "revoked": strings.CODE_REVOKED,
}


async def ws_members(call: CommandCall) -> None:
    ctx = call.ctx
    workspace = await require_workspace(ctx, call.room_id, call.sender)
    await require_host(ctx, workspace, call.sender)
    page = page_number(call.command.text, BY_NAME["ws members"].usage)
    lines = []
    for member in await ctx.workspaces.members(workspace.id):
        if member.membership not in ("join", "invite"):
            continue
        presence = ctx.presence.get(member.user_id)
        state = presence.presence if presence else strings.PRESENCE_UNKNOWN
        pending = strings.MEMBER_INVITED if member.membership == "invite" else ""
        lines.append(
            strings.MEMBER_LINE.format(
                user=member.user_id, role=member.role, presence=state, pending=pending
            )
        )
    header = strings.MEMBERS_HEADER.format(name=workspace.name)
    await call.reply.send_notice(page_of(header, lines, page=page, command="!ws members"))


async def _delegation(call: CommandCall, level: int) -> None:
    ctx = call.ctx
    name = "ws delegate" if level else "ws undelegate"
    if len(call.command.args) != 1 or not _USER_ID.match(call.command.args[0]):
        raise _usage(name)
    user = call.command.args[0]
    workspace = await require_workspace(ctx, call.room_id, call.sender)
    await require_host(ctx, workspace, call.sender)
    role = await current_role(ctx, workspace, user)
    if role == "host":
        raise UserError(strings.HOST_NOT_DELEGATE.format(user=user))
    try:
        if level:
            if role is None:
                raise UserError(strings.NOT_A_MEMBER.format(user=user, name=workspace.name))
            await set_role_level(ctx, workspace, user, level)
        # Undelegating works on anyone who holds power, in the workspace or no longer.
        elif not await take_power_everywhere(ctx, workspace, user):
            raise UserError(strings.NO_POWER_HELD.format(user=user, name=workspace.name))
    except MatrixRequestError as e:
        raise _explained(e) from None
    text = (strings.DELEGATED if level else strings.UNDELEGATED).format(
        user=pill(user), name=workspace.name
    )
    await call.reply.send_notice(text, mentions=[user])  # they are told


async def ws_forget(call: CommandCall) -> None:
    """The host has a person forgotten in the workspace (bot.data.forget)."""
    ctx = call.ctx
    if len(call.command.args) != 1 or not _USER_ID.match(call.command.args[0]):
        raise _usage("ws forget")
    user = call.command.args[0]
    workspace = await require_workspace(ctx, call.room_id, call.sender)
    await require_host(ctx, workspace, call.sender)
    secret = ctx.config.appservice.as_token.get_secret_value()
    async with ctx.db.acquire() as conn:
        done = await forget_in_workspace(conn, workspace.id, user, secret=secret)
    await call.reply.send_notice(
        strings.FORGOT_PERSON.format(
            user=user,
            name=workspace.name,
            messages=done.messages,
            memories=done.memories,
            records=done.records,
            pseudonym=done.pseudonym,
        )
    )


async def ws_delegate(call: CommandCall) -> None:
    await _delegation(call, DELEGATE_LEVEL)


async def ws_undelegate(call: CommandCall) -> None:
    await _delegation(call, 0)


async def ws_settings(call: CommandCall) -> None:
    ctx = call.ctx
    workspace = await require_workspace(ctx, call.room_id, call.sender)
    await require_host(ctx, workspace, call.sender)
    current = workspace.settings
    args = call.command.args
    if args:
        if len(args) < 2:
            raise _usage("ws settings")
        current = settings.updated(current, args[0], " ".join(args[1:]))
        if current.encrypted and not ctx.config.encryption.enabled:
            raise UserError(strings.SETTING_ENCRYPTION_OFF)
        await ctx.workspaces.set_settings(workspace.id, current)
    lines = [strings.SETTINGS_HEADER.format(name=workspace.name)]
    lines += [
        strings.SETTING_LINE.format(key=k, value=v, description=d)
        for k, v, d in settings.describe(current)
    ]
    lines.append("")  # what follows is not part of the list
    run = await retention.last_run(ctx, workspace.id)
    if run is not None and (run.messages or run.memories):
        lines.append(
            strings.RETENTION_LAST_RUN.format(
                date=run.ran_at.strftime("%Y-%m-%d %H:%M UTC"),
                messages=run.messages,
                memories=run.memories,
                cutoff=run.cutoff.strftime("%Y-%m-%d"),
            )
        )
    lines.append(strings.SETTINGS_FOOTER)
    await call.reply.send_notice("\n".join(lines))


async def ws_use(call: CommandCall) -> None:
    ctx = call.ctx
    name = call.command.text.strip().strip("\"'").lower()
    if not name:
        raise _usage("ws use")
    mine = await ctx.workspaces.of_member(call.sender)
    matches = [w for w in mine if w.name.lower() == name] or [
        w for w in mine if w.name.lower().startswith(name)
    ]
    if len(matches) != 1:
        names = ", ".join(f"**{w.name}**" for w in mine) or strings.NONE
        raise UserError(strings.NO_SUCH_WORKSPACE.format(name=name, names=names))
    await ctx.workspaces.set_direct_choice(call.sender, matches[0].id)
    note = "" if await is_dm(ctx, call.room_id) else strings.USE_ONLY_IN_DM
    await call.reply.send_notice(strings.USING.format(name=matches[0].name) + note)
