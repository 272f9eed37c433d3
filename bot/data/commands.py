"""`!ws export` (host): the workspace's export, compressed, sent to the host's DM as a file."""

from __future__ import annotations

import logging
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from appservice.matrix import markdown_content
from bot.core import strings
from bot.commands.call import CommandCall
from bot.data.portable import export_file
from bot.rooms.direct import direct_room
from bot.workspaces.access import require_host, require_workspace

log = logging.getLogger(__name__)


def _size(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB" if n >= 100_000 else f"{n / 1000:.0f} kB"


async def ws_export(call: CommandCall) -> None:
    ctx = call.ctx
    workspace = await require_workspace(ctx, call.room_id, call.sender)
    await require_host(ctx, workspace, call.sender)
    dm = await direct_room(ctx, call.sender)
    progress = await call.reply.send_notice(strings.EXPORTING.format(name=workspace.name))
    name = f"doryo-{workspace.id}-{datetime.now(UTC):%Y%m%d-%H%M}.jsonl.gz"
    with tempfile.TemporaryDirectory(prefix="doryo-export-") as folder:
        path = Path(folder) / name
        async with ctx.db.acquire() as conn:
            counts = await export_file(conn, workspace.id, path)
        size = path.stat().st_size
        limit = await ctx.matrix.upload_limit()
        if limit is not None and size > limit:
            text = strings.EXPORT_TOO_BIG.format(
                size=_size(size), limit=_size(limit), workspace=workspace.id
            )
            await ctx.matrix.edit(call.room_id, progress, markdown_content(text, notice=True))
            return
        mxc = await ctx.matrix.upload(path.read_bytes(), name, "application/gzip")
    records = sum(counts.values())
    content = {
        "msgtype": "m.file",
        "body": name,
        "filename": name,
        "url": mxc,
        "info": {"size": size, "mimetype": "application/gzip"},
    }
    await call.reply.send(content, room_id=dm)
    done = strings.EXPORTED.format(name=workspace.name, records=f"{records:,}", size=_size(size))
    await ctx.matrix.edit(call.room_id, progress, markdown_content(done, notice=True))
    log.info("exported %s for %s: %d records, %d bytes", workspace.id, call.sender, records, size)
