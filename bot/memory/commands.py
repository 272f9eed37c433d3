"""!remember TEXT, !forget ID (host or author), !memory [QUERY]."""

from __future__ import annotations

from bot.agent.answer import event_link
from bot.commands.call import CommandCall
from bot.commands.catalog import BY_NAME
from bot.commands.outputs import inline
from bot.commands.parser import number
from bot.core import strings
from bot.core.errors import EmbeddingModelMismatch, PermissionDenied, UserError
from bot.data.forget import forget_in_workspace, workspaces_of
from bot.memory.service import Memory
from bot.workspaces.access import current_role, require_member, require_workspace

RESULTS = 5


def _memory(call: CommandCall) -> Memory:
    if call.ctx.memory is None:
        raise UserError(strings.MEMORY_OFF)
    return call.ctx.memory


async def remember(call: CommandCall) -> None:
    text = call.command.text.strip()
    if not text:
        raise UserError(strings.USAGE.format(usage=BY_NAME["remember"].usage))
    memory = _memory(call)
    workspace = await require_workspace(call.ctx, call.room_id, call.sender)
    await require_member(call.ctx, workspace, call.sender)
    try:
        item = await memory.remember(
            workspace.id,
            text,
            author=call.sender,
            room_id=call.room_id,
            event_id=call.reply.event_id,
        )
    except EmbeddingModelMismatch:
        raise UserError(strings.MEMORY_NEEDS_REINDEX) from None
    if item is None:
        raise UserError(strings.USAGE.format(usage=BY_NAME["remember"].usage))
    await call.reply.send_notice(strings.REMEMBERED.format(id=item.id))


async def forget(call: CommandCall) -> None:
    words = [a.lower() for a in call.command.args]
    if words[:1] == ["me"]:
        await forget_me(call, confirmed=words[1:] == ["confirm"])
        return
    raw = call.command.text.strip().lstrip("#")
    if raw[:1].lower() == "d" and (document_id := number(raw[1:])) is not None:
        await _forget_document(call, raw, document_id)
        return
    if (item_id := number(raw)) is None:
        raise UserError(strings.USAGE.format(usage=BY_NAME["forget"].usage))
    memory = _memory(call)
    workspace = await require_workspace(call.ctx, call.room_id, call.sender)
    item = await memory.get(workspace.id, item_id)
    if item is None:
        raise UserError(strings.NO_SUCH_MEMORY.format(id=raw))
    if item.kind == "document" and item.event_id is not None:
        # A piece of a document: the document goes, as with !forget dN.
        document = await call.ctx.documents.store.get(workspace.id, item.event_id)
        if document is not None:
            await _forget_document(call, f"d{document.id}", document.id)
            return
    if (
        item.author != call.sender
        and await current_role(call.ctx, workspace, call.sender) != "host"
    ):
        raise PermissionDenied(strings.FORGET_WHO.format(host=workspace.host))
    await memory.forget(workspace.id, item.id)
    await call.reply.send_notice(strings.FORGOTTEN.format(id=item.id))


async def _forget_document(call: CommandCall, raw: str, document_id: int) -> None:
    """A shared document's pieces and record (the file's message stays in the room): the
    host's or its sharer's to do."""
    workspace = await require_workspace(call.ctx, call.room_id, call.sender)
    documents = call.ctx.documents
    document = await documents.store.by_id(workspace.id, document_id)
    if document is None:
        raise UserError(strings.DOC_UNKNOWN.format(id=inline(raw, 20)))
    if (
        document.sender != call.sender
        and await current_role(call.ctx, workspace, call.sender) != "host"
    ):
        raise PermissionDenied(strings.FORGET_WHO.format(host=workspace.host))
    await documents.forget(workspace.id, document.event_id)
    await call.reply.send_notice(
        strings.DOC_FORGOTTEN.format(name=inline(document.name, 80), pieces=document.pieces)
    )


async def forget_me(call: CommandCall, *, confirmed: bool) -> None:
    """`!forget me`: says what it would forget; `!forget me confirm` does it, in every workspace
    that holds anything the person said (member or not any more)."""
    ctx = call.ctx
    async with ctx.db.acquire() as conn:
        workspace_ids = await workspaces_of(conn, call.sender)
        names = []
        for workspace_id in workspace_ids:
            found = await ctx.workspaces.get(workspace_id)
            names.append(found.name if found else workspace_id)
        if not workspace_ids:
            raise UserError(strings.FORGET_ME_NOTHING)
        if not confirmed:
            await call.reply.send_notice(
                strings.FORGET_ME_ASK.format(count=len(names), names=", ".join(names))
            )
            return
        secret = ctx.config.appservice.as_token.get_secret_value()
        done = [
            await forget_in_workspace(conn, w, call.sender, secret=secret) for w in workspace_ids
        ]
    await call.reply.send_notice(
        strings.FORGOT_ME.format(
            count=len(done),
            messages=sum(d.messages for d in done),
            memories=sum(d.memories for d in done),
        )
    )


async def search(call: CommandCall) -> None:
    memory = _memory(call)
    workspace = await require_workspace(call.ctx, call.room_id, call.sender)
    await require_member(call.ctx, workspace, call.sender)
    query = call.command.text.strip()
    if not query:
        stats = await memory.stats(workspace.id)
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(stats.by_kind.items())) or "—"
        await call.reply.send_notice(
            strings.MEMORY_STATS.format(
                name=workspace.name, items=stats.items, kinds=kinds, model=stats.model or "—"
            )
        )
        return
    try:
        hits = await memory.search(workspace.id, query, k=RESULTS)
    except EmbeddingModelMismatch:
        hits = await memory.search(workspace.id, query, k=RESULTS, mode="fulltext")
    if not hits:
        await call.reply.send_notice(strings.SEARCH_NOTHING.format(query=query))
        return
    domain = call.ctx.config.homeserver.domain
    lines = [strings.MEMORY_RESULTS.format(query=query)]
    for hit in hits:
        item = hit.item
        link = (
            f" — [link]({event_link(item.room_id, item.event_id, domain)})"
            if item.room_id and item.event_id
            else ""
        )
        lines.append(
            strings.MEMORY_RESULT.format(
                id=item.id,
                kind=f"{item.kind}: {inline(item.place, 90)}" if item.place else item.kind,
                text=inline(item.text, 300),
                when=item.created_at.strftime("%Y-%m-%d"),
                link=link,
            )
        )
    await call.reply.send_notice("\n".join(lines))
