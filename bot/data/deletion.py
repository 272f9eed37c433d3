"""Deleting a workspace: `!ws delete` (host), confirmed by the host with ✅ on a card.

- The request posts a card that says what goes (with counts) and that the Matrix rooms stay, and
  waits an hour for the host's ✅ (✔️ ☑️ 👍) or ❌; `!ws delete confirm|cancel` is the text
  fallback. Only the host, read from the space's power levels at that moment, decides: a
  delegate or anyone else is told so once. One UPDATE … WHERE status = 'awaiting_confirm'
  decides, so of concurrent or redelivered confirmations exactly one runs it.
- The run deletes every row of the workspace in one transaction (all or nothing; row locks
  only, so other workspaces go on), edits the card, says goodbye in each session, leaves the
  space and its sessions, and ends the workspace's Letta agents. The rooms and agents to
  deal with are written in that same transaction: killed after it, the next start finishes
  what is left (leaving a room twice, or deleting an agent Letta no longer has, is no error).
- What stays: the record of the deletion (workspace ID, who asked and confirmed, counts), the
  bot's own membership of the rooms it left (`rooms`), and LLM rate-limit counters in Redis,
  which expire by themselves. A workspace's own memory index is dropped by the next pass of
  Memory.index_workspaces (a DROP INDEX in the transaction would lock every workspace's memory).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import asyncpg

from appservice.errors import HomeserverUnavailable, MatrixRequestError
from appservice.matrix import JSON, markdown_content, pill
from bot.core import strings
from bot.actions.card import reaction_meaning
from bot.commands.call import CommandCall
from bot.core.db import LONG_COMMAND
from bot.core.errors import UserError
from bot.letta.client import FAILURES as LETTA_FAILURES
from bot.core.replies import Replier
from bot.workspaces.access import current_role, require_host, require_workspace
from bot.workspaces.store import Workspace

if TYPE_CHECKING:
    from bot.context import Context

log = logging.getLogger(__name__)

EXPIRY = timedelta(hours=1)
DELETION_KEY = "org.doryo.workspace_deletion"

Scope = Literal["workspace", "rooms", "agents"]
_WHERE: dict[Scope, str] = {
    "workspace": "workspace_id = $1",
    "rooms": "room_id = ANY($1::text[])",
    "agents": "agent_id = ANY($1::text[])",
}
DELETES: tuple[tuple[str, Scope], ...] = (
    ("letta_approvals", "agents"),
    ("memory_items", "workspace"),
    ("tool_runs", "workspace"),
    ("llm_usage", "workspace"),
    ("inbox_events", "rooms"),
    ("sent_events", "rooms"),
    ("room_members", "rooms"),
    ("finished_answers", "rooms"),
)
"""What deleting a workspace deletes before the workspace's row: the tables that do not follow
that row by a foreign key (ON DELETE CASCADE). The row then takes the rest with it (members,
invites, DM choices, sessions and their messages, actions, tasks, reminders, Letta agents'
records, pending adoptions, retention runs); memory vectors follow their items. "rooms" are the
space and its sessions, "agents" its Letta agents. A test lists the schema's tables so that a
new one cannot be left behind."""

KEPT = {
    "workspace_deletions": "the record of the deletion itself",
    "rooms": "the bot's own membership of rooms (it left them)",
}


@dataclass(frozen=True, slots=True)
class Deletion:
    id: int
    workspace_id: str
    room_id: str
    card_event_id: str | None
    requested_by: str
    expires_at: datetime
    status: str
    decided_by: str | None
    rooms: list[str] | None
    letta_agents: list[str] | None
    counts: dict[str, int] | None


_COLUMNS = (
    "id, workspace_id, room_id, card_event_id, requested_by, expires_at, status, decided_by, "
    "rooms, letta_agents, counts"
)


def _deletion(row: Any) -> Deletion:
    return Deletion(**{k: row[k] for k in _COLUMNS.split(", ")})


# Counting and deleting -------------------------------------------------------------------------


async def _rooms_and_agents(
    conn: asyncpg.Connection, workspace_id: str
) -> tuple[list[str], list[str]]:
    space = await conn.fetchval("SELECT space_id FROM workspaces WHERE id = $1", workspace_id)
    sessions = await conn.fetch(
        "SELECT room_id FROM sessions WHERE workspace_id = $1 ORDER BY started_at", workspace_id
    )
    agents = await conn.fetch(
        "SELECT agent_id FROM letta_agents WHERE workspace_id = $1", workspace_id
    )
    rooms = ([space] if space else []) + [r["room_id"] for r in sessions]
    return rooms, [r["agent_id"] for r in agents]


async def what_goes(conn: asyncpg.Connection, workspace_id: str) -> dict[str, int]:
    """What the card tells the host will be deleted."""
    row = await conn.fetchrow(
        """
        SELECT (SELECT count(*) FROM messages m JOIN sessions s USING (room_id)
                 WHERE s.workspace_id = $1) AS messages,
               (SELECT count(*) FROM memory_items WHERE workspace_id = $1) AS memories,
               (SELECT count(*) FROM actions WHERE workspace_id = $1) AS actions,
               (SELECT count(*) FROM tasks WHERE workspace_id = $1) AS tasks,
               (SELECT count(*) FROM followups WHERE workspace_id = $1) AS followups,
               (SELECT count(*) FROM llm_usage WHERE workspace_id = $1) AS usage,
               (SELECT count(*) FROM sessions WHERE workspace_id = $1) AS sessions,
               (SELECT count(*) FROM letta_agents WHERE workspace_id = $1) AS agents
        """,
        workspace_id,
    )
    return dict(row)


def _count(status: str) -> int:
    return int(status.split()[-1])


async def _cascaded(conn: asyncpg.Connection, workspace_id: str) -> int:
    """The main rows that go with the workspace's row (for the count people are shown)."""
    return int(
        await conn.fetchval(
            """
            SELECT (SELECT count(*) FROM sessions WHERE workspace_id = $1)
                 + (SELECT count(*) FROM workspace_members WHERE workspace_id = $1)
                 + (SELECT count(*) FROM workspace_invites WHERE workspace_id = $1)
                 + (SELECT count(*) FROM actions WHERE workspace_id = $1)
                 + (SELECT count(*) FROM tasks WHERE workspace_id = $1)
                 + (SELECT count(*) FROM followups WHERE workspace_id = $1)
                 + (SELECT count(*) FROM letta_agents WHERE workspace_id = $1) + 1
            """,
            workspace_id,
        )
    )


async def delete_data(conn: asyncpg.Connection, deletion_id: int, workspace_id: str) -> None:
    """Delete every row of the workspace and note on the deletion what is left to do, in one
    transaction. A second call (the first one's transaction committed, a crash after) finds
    nothing and keeps what the first noted."""
    async with conn.transaction():
        exists = await conn.fetchval(
            "SELECT true FROM workspaces WHERE id = $1 FOR UPDATE", workspace_id
        )
        if not exists:
            return
        rooms, agents = await _rooms_and_agents(conn, workspace_id)
        messages = await conn.fetchval(
            "SELECT count(*) FROM messages WHERE room_id = ANY($1::text[])", rooms
        )
        counts = {"messages": int(messages), "memories": 0, "records": 0}
        values: dict[Scope, Any] = {"workspace": workspace_id, "rooms": rooms, "agents": agents}
        for table, scope in DELETES:
            status = await conn.execute(
                f"DELETE FROM {table} WHERE {_WHERE[scope]}", values[scope], timeout=LONG_COMMAND
            )
            counts["memories" if table == "memory_items" else "records"] += _count(status)
        # What the workspace's row takes with it, counted before it goes.
        counts["records"] += await _cascaded(conn, workspace_id)
        await conn.execute(
            "DELETE FROM workspaces WHERE id = $1", workspace_id, timeout=LONG_COMMAND
        )
        await conn.execute(
            "UPDATE workspace_deletions SET rooms = $2, letta_agents = $3, counts = $4 "
            "WHERE id = $1",
            deletion_id,
            rooms,
            agents,
            counts,
        )


# The card ----------------------------------------------------------------------------------------


def _status_line(deletion: Deletion, host: str) -> str:
    by = pill(deletion.decided_by)
    match deletion.status:
        case "awaiting_confirm":
            return strings.DELETE_AWAITING.format(host=pill(host))
        case "running":
            return strings.DELETE_RUNNING.format(by=by)
        case "done":
            return strings.DELETE_DONE.format(by=by)
        case "cancelled":
            return strings.DELETE_CANCELLED.format(by=by)
        case _:
            return strings.DELETE_EXPIRED


def card_content(
    deletion: Deletion,
    name: str,
    host: str,
    what: dict[str, int] | None,
    *,
    result: str | None = None,
    reply_to: str | None = None,
) -> JSON:
    """The card for the deletion's current status: while it waits (and runs), what goes;
    once done, what went."""
    lines = [_status_line(deletion, host), "", strings.DELETE_TITLE.format(name=name)]
    if what is not None:
        parts = [
            text.format(n=f"{what.get(key, 0):,}")
            for key, text in strings.DELETE_PARTS.items()
            if what.get(key) or key in ("messages", "memories")
        ]
        lines += ["", strings.DELETE_WHAT.format(what=", ".join(parts))]
    if deletion.status == "awaiting_confirm":
        lines += ["", strings.DELETE_HOW.format(expires=f"{deletion.expires_at:%H:%M UTC}")]
    if result:
        lines += ["", result]
    # Who must act or be told is mentioned: the host while it waits, the requester after.
    mentions = [host] if deletion.status == "awaiting_confirm" else [deletion.requested_by]
    content = markdown_content("\n".join(lines), reply_to=reply_to, mentions=mentions)
    content[DELETION_KEY] = {
        "workspace": deletion.workspace_id,
        "status": deletion.status,
        "requested_by": deletion.requested_by,
        **({"deleted": deletion.counts} if deletion.counts else {}),
    }
    return content


def _result(deletion: Deletion, agents_ended: int) -> str:
    counts = deletion.counts or {}
    agents = deletion.letta_agents or []
    return strings.DELETE_RESULT.format(
        messages=f"{counts.get('messages', 0):,}",
        memories=f"{counts.get('memories', 0):,}",
        records=f"{counts.get('records', 0):,}",
        rooms=len(deletion.rooms or []),
        agents=(
            strings.DELETE_RESULT_AGENTS.format(ended=agents_ended, count=len(agents))
            if agents
            else ""
        ),
    )


async def _edit_card(
    ctx: Context, deletion: Deletion, name: str, host: str, *, result: str | None = None
) -> None:
    if deletion.card_event_id is None:
        return
    what = None
    if deletion.status in ("awaiting_confirm", "running"):
        async with ctx.db.acquire() as conn:
            what = await what_goes(conn, deletion.workspace_id)
    try:
        await ctx.matrix.edit(
            deletion.room_id,
            deletion.card_event_id,
            card_content(deletion, name, host, what, result=result),
            txn_id=f"doryo.wd.{deletion.id}.{deletion.status}",
        )
    except Exception as e:  # the status is in the database; the card is a view of it
        log.warning("could not update the deletion card of %s: %s", deletion.workspace_id, e)


# Requests and decisions --------------------------------------------------------------------------


async def _get(ctx: Context, where: str, *args: Any) -> Deletion | None:
    row = await ctx.db.fetchrow(
        f"SELECT {_COLUMNS} FROM workspace_deletions WHERE {where} ORDER BY id DESC LIMIT 1", *args
    )
    return _deletion(row) if row else None


async def ws_delete(call: CommandCall) -> None:
    """`!ws delete` asks (a card); `!ws delete confirm|cancel` decides, as ✅/❌ on the card."""
    ctx = call.ctx
    args = call.command.args
    if args not in ((), ("confirm",), ("cancel",)):
        raise UserError(strings.USAGE.format(usage="!ws delete [confirm|cancel]"))
    workspace = await require_workspace(ctx, call.room_id, call.sender)
    await require_host(ctx, workspace, call.sender)
    request_id = call.reply.event_id
    await expire_due(ctx)
    if args:
        waiting = await _get(
            ctx, "workspace_id = $1 AND status = 'awaiting_confirm'", workspace.id
        )
        if waiting is None:
            raise UserError(strings.DELETE_NOTHING_OPEN)
        confirm = args[0] == "confirm"
        if await _decide(ctx, waiting, workspace, call.sender, confirm=confirm):
            text = strings.DELETE_STARTED if confirm else strings.DELETE_KEPT
            await call.reply.send_notice(text.format(name=workspace.name))
        return
    mine = await _get(ctx, "request_event_id = $1", request_id)
    if mine is None:
        open_ = await _get(
            ctx, "workspace_id = $1 AND status IN ('awaiting_confirm', 'running')", workspace.id
        )
        if open_ is not None and open_.card_event_id is not None:
            domain = ctx.config.homeserver.domain
            card = f"https://matrix.to/#/{open_.room_id}/{open_.card_event_id}?via={domain}"
            raise UserError(strings.DELETE_OPEN.format(name=workspace.name, card=card))
        if open_ is not None and open_.status == "awaiting_confirm":
            # A request whose card was never posted (its handling failed for good): nobody
            # can confirm it, so it gives way to this one.
            await ctx.db.execute(
                "UPDATE workspace_deletions SET status = 'expired', finished_at = now() "
                "WHERE id = $1 AND card_event_id IS NULL AND status = 'awaiting_confirm'",
                open_.id,
            )
        row = await ctx.db.fetchrow(
            f"""
            INSERT INTO workspace_deletions (workspace_id, room_id, request_event_id,
                                             requested_by, expires_at)
            VALUES ($1, $2, $3, $4, now() + $5::interval)
            ON CONFLICT DO NOTHING
            RETURNING {_COLUMNS}
            """,
            workspace.id,
            call.room_id,
            request_id,
            call.sender,
            EXPIRY,
        )
        if row is None:  # another request of the workspace, at the same moment
            raise UserError(strings.DELETE_RACED.format(name=workspace.name))
        mine = _deletion(row)
    if mine.card_event_id is not None:
        return  # this request, handled before
    async with ctx.db.acquire() as conn:
        what = await what_goes(conn, workspace.id)
    content = card_content(mine, workspace.name, workspace.host, what, reply_to=request_id)
    card = await call.reply.send(content)
    await ctx.db.execute(
        "UPDATE workspace_deletions SET card_event_id = $2 WHERE id = $1", mine.id, card
    )
    log.info("deletion of %s requested by %s", workspace.id, call.sender)


async def on_reaction(
    ctx: Context, room_id: str, sender: str, target: str, key: str, reaction_id: str, reply: Replier
) -> bool:
    """A reaction on a deletion card (True: handled here), or on something else (False)."""
    deletion = await _get(ctx, "card_event_id = $1", target)
    if deletion is None:
        return False
    meaning = reaction_meaning(key)
    if meaning is None or deletion.room_id != room_id or deletion.status != "awaiting_confirm":
        return True
    if await ctx.inbox.redaction_pending(room_id, reaction_id):
        return True  # taken back before it was handled
    workspace = await ctx.workspaces.get(deletion.workspace_id)
    if workspace is None:
        return True
    if await current_role(ctx, workspace, sender) != "host":
        first_time = await ctx.db.fetchval(
            "UPDATE workspace_deletions SET told = array_append(told, $2) "
            "WHERE id = $1 AND NOT ($2 = ANY(told)) RETURNING id",
            deletion.id,
            sender,
        )
        if first_time is not None:
            assert deletion.card_event_id is not None
            text = strings.DELETE_ONLY_HOST.format(host=pill(workspace.host))
            await reply.send_near(text, deletion.card_event_id, mentions=[sender])
        return True
    if deletion.expires_at <= datetime.now(UTC):
        await expire_due(ctx)
        return True
    await _decide(ctx, deletion, workspace, sender, confirm=meaning == "confirm")
    return True


async def _decide(
    ctx: Context, deletion: Deletion, workspace: Workspace, by: str, *, confirm: bool
) -> bool:
    """Confirm (the run starts) or cancel; False if someone or something decided first."""
    row = await ctx.db.fetchrow(
        f"""
        UPDATE workspace_deletions
        SET status = $2, decided_by = $3, decided_at = now(), told = '{{}}',
            finished_at = CASE WHEN $2 = 'cancelled' THEN now() END
        WHERE id = $1 AND status = 'awaiting_confirm' AND expires_at > now()
        RETURNING {_COLUMNS}
        """,
        deletion.id,
        "running" if confirm else "cancelled",
        by,
    )
    if row is None:
        return False
    decided = _deletion(row)
    if confirm:
        log.info("deleting workspace %s, confirmed by %s", workspace.id, by)
        ctx.tasks.spawn(_run(ctx, decided, workspace.name, workspace.host), "workspace deletion")
    else:
        log.info("deletion of %s cancelled by %s", workspace.id, by)
        await _edit_card(ctx, decided, workspace.name, workspace.host)
    return True


async def expire_due(ctx: Context) -> int:
    rows = await ctx.db.fetch(
        f"""
        UPDATE workspace_deletions SET status = 'expired', told = '{{}}', finished_at = now()
        WHERE status = 'awaiting_confirm' AND expires_at <= now()
        RETURNING {_COLUMNS}
        """
    )
    for row in rows:
        deletion = _deletion(row)
        workspace = await ctx.workspaces.get(deletion.workspace_id)
        if workspace is not None:
            await _edit_card(ctx, deletion, workspace.name, workspace.host)
    return len(rows)


# Running ------------------------------------------------------------------------------------------


async def _run(ctx: Context, deletion: Deletion, name: str, host: str) -> None:
    """Delete, end the agents, say so on the card, say goodbye and leave. Every step may run
    again (recover): the deletion is done only once the bot is out of every room — with the
    homeserver away it stays `running`, and maintenance finishes it later."""
    await _edit_card(ctx, deletion, name, host)
    async with ctx.db.acquire() as conn:
        await delete_data(conn, deletion.id, deletion.workspace_id)
    noted = await _get(ctx, "id = $1", deletion.id)
    assert noted is not None
    agents_ended = await _end_agents(ctx, noted.letta_agents or [])
    # The card first, as done: it may be in a session room the bot is about to leave.
    done = dataclasses.replace(noted, status="done")
    await _edit_card(ctx, done, name, host, result=_result(done, agents_ended))
    rooms = noted.rooms or []
    left = [
        await _leave(ctx, noted.id, room_id, name, farewell=room_id != rooms[0])
        for room_id in rooms
    ]
    if not all(left):
        log.warning(
            "deleted workspace %s, but the homeserver was away: leaving its rooms later",
            noted.workspace_id,
        )
        return
    await ctx.db.execute(
        "UPDATE workspace_deletions SET status = 'done', finished_at = now() "
        "WHERE id = $1 AND status = 'running'",
        deletion.id,
    )
    log.info(
        "deleted workspace %s (%s); left %d rooms; ended %d of %d Letta agents",
        noted.workspace_id,
        noted.counts,
        len(rooms),
        agents_ended,
        len(noted.letta_agents or []),
    )


async def _leave(ctx: Context, deletion_id: int, room_id: str, name: str, *, farewell: bool) -> bool:
    """Say goodbye in a session (not in the space: it has no timeline in most clients), leave.
    False if the homeserver was away (to be tried again); True once out of the room, or when
    the homeserver refuses (the bot was kicked, or left already)."""
    try:
        if farewell:
            await ctx.matrix.send_markdown(
                room_id,
                strings.DELETE_FAREWELL.format(name=name),
                notice=True,
                txn_id=f"doryo.wd.{deletion_id}.bye.{room_id}",
            )
        await ctx.matrix.leave(room_id)
    except HomeserverUnavailable as e:
        log.warning("could not leave %s after deleting its workspace: %s", room_id, e)
        return False
    except MatrixRequestError as e:  # not in the room any more, kicked, banned: nothing to do
        log.info("did not leave %s after deleting its workspace: %s", room_id, e)
    return True


async def _end_agents(ctx: Context, agents: list[str]) -> int:
    """Delete the workspace's agents on the Letta server; how many are gone now."""
    if not agents:
        return 0
    if ctx.letta is None:
        log.warning("Letta is off: %d agents of a deleted workspace stay on it", len(agents))
        return 0
    ended = 0
    for agent_id in agents:
        try:
            await ctx.letta.client.sdk.agents.delete(agent_id)
            ended += 1
        except LETTA_FAILURES as e:
            if getattr(e, "status_code", None) == 404:
                ended += 1  # gone already
            else:
                log.warning("could not end Letta agent %s: %s", agent_id, e)
    return ended


async def recover(ctx: Context, decided_before: datetime) -> None:
    """Deletions a stop, a crash or an absent homeserver cut short (confirmed before
    `decided_before`: at start, this process's beginning; in maintenance, a while ago): finish
    them."""
    rows = await ctx.db.fetch(
        f"SELECT {_COLUMNS} FROM workspace_deletions "
        "WHERE status = 'running' AND decided_at < $1",
        decided_before,
    )
    for row in rows:
        deletion = _deletion(row)
        workspace = await ctx.workspaces.get(deletion.workspace_id)
        name = workspace.name if workspace else deletion.workspace_id
        host = workspace.host if workspace else deletion.requested_by
        log.info("finishing the deletion of %s, cut short by a restart", deletion.workspace_id)
        await _run(ctx, deletion, name, host)
