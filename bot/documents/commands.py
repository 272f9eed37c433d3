"""`!docs`: the workspace's documents — name, who shared it and when, and what became of it."""

from __future__ import annotations

from bot.agent.answer import event_link
from bot.agent.prompt import display_name
from bot.commands.call import CommandCall
from bot.commands.outputs import inline
from bot.core import strings
from bot.documents.store import Document
from bot.workspaces.access import require_member, require_workspace

LISTED = 30


def state(document: Document) -> str:
    if document.status == "done":
        if document.pages:
            return strings.DOCS_STATE_DONE_PAGES.format(
                pages=document.pages, pieces=document.pieces
            )
        return strings.DOCS_STATE_DONE.format(pieces=document.pieces)
    if document.status == "skipped":
        return strings.DOCS_STATE_SKIPPED.format(reason=inline(document.reason or "", 160))
    if document.status == "reading":
        return strings.DOCS_STATE_READING
    return strings.DOCS_STATE_WAITING


async def docs(call: CommandCall) -> None:
    ctx = call.ctx
    workspace = await require_workspace(ctx, call.room_id, call.sender)
    await require_member(ctx, workspace, call.sender)
    documents = await ctx.documents.store.of_workspace(workspace.id, limit=LISTED + 1)
    if not documents:
        await call.reply.send_notice(strings.DOCS_NONE.format(name=inline(workspace.name, 80)))
        return
    total = await ctx.documents.store.count(workspace.id)
    domain = ctx.config.homeserver.domain
    lines = [strings.DOCS_HEADER.format(name=inline(workspace.name, 80), count=total)]
    for document in documents[:LISTED]:
        lines.append(
            strings.DOCS_LINE.format(
                id=f"d{document.id}",
                doc=inline(document.name, 80),
                link=event_link(document.room_id, document.event_id, domain),
                who=inline(display_name(document.sender), 60),
                when=f"{document.shared_at:%Y-%m-%d}",
                state=state(document),
            )
        )
    # A blank line first: a line right after a list item would continue that item.
    lines.append("")
    if total > LISTED:
        lines.append(strings.DOCS_MORE.format(more=total - LISTED))
    lines.append(strings.DOCS_FORGET_HINT)
    await call.reply.send_notice("\n".join(lines))
