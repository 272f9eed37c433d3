"""!connect TOOLKIT, !connections, !disconnect ID: a person's accounts linked through Composio.

Linked accounts belong to the person, not to a workspace (the Composio user is the Matrix user
ID), so these work in any room with the bot, for anyone who is a member of some workspace. The
connect link is sent in the person's direct chat with the bot: whoever opens it links an account
to that person.
"""

from __future__ import annotations

from bot.commands.call import CommandCall
from bot.commands.catalog import BY_NAME
from bot.composio.client import ComposioClient
from bot.composio.tools import require_composio
from bot.core import strings
from bot.core.errors import PermissionDenied, UserError
from bot.rooms.direct import direct_room


async def _client_for_member(call: CommandCall) -> ComposioClient:
    client = require_composio(call.ctx)
    if not await call.ctx.workspaces.of_member(call.sender):
        raise PermissionDenied(strings.COMPOSIO_MEMBERS_ONLY)
    return client


def _toolkits(client: ComposioClient) -> str:
    return ", ".join(f"`{t}`" for t in sorted(client.auth_configs)) or strings.COMPOSIO_NO_TOOLKITS


async def connect(call: CommandCall) -> None:
    toolkit = call.command.text.strip().lower()
    if not toolkit or " " in toolkit:
        raise UserError(strings.USAGE.format(usage=BY_NAME["connect"].usage))
    client = await _client_for_member(call)
    url = await client.link(call.sender, toolkit)
    text = strings.CONNECT_LINK.format(toolkit=toolkit, url=url)
    dm = await direct_room(call.ctx, call.sender)
    if dm == call.room_id:
        await call.reply.send_notice(text)
        return
    await call.reply.send_notice(text, reply_to=None, room_id=dm)
    await call.reply.send_notice(strings.CONNECT_SENT.format(toolkit=toolkit))


async def connections(call: CommandCall) -> None:
    client = await _client_for_member(call)
    accounts = await client.accounts(call.sender)
    if not accounts:
        await call.reply.send_notice(strings.NO_CONNECTIONS.format(toolkits=_toolkits(client)))
        return
    lines = [strings.CONNECTIONS_HEADER]
    lines += [
        strings.CONNECTION_LINE.format(
            id=a.id, toolkit=a.toolkit, status=a.status.lower(), date=a.created_at[:10]
        )
        for a in accounts
    ]
    lines += ["", strings.CONNECTIONS_FOOTER]  # not part of the list's last item
    await call.reply.send_notice("\n".join(lines))


async def disconnect(call: CommandCall) -> None:
    account_id = call.command.text.strip()
    if not account_id or " " in account_id:
        raise UserError(strings.USAGE.format(usage=BY_NAME["disconnect"].usage))
    client = await _client_for_member(call)
    account = await client.account_of(call.sender, account_id)
    if account is None:
        raise UserError(strings.NO_SUCH_CONNECTION.format(id=account_id))
    await client.delete(account.id)
    await call.reply.send_notice(
        strings.DISCONNECTED.format(toolkit=account.toolkit, id=account.id)
    )
