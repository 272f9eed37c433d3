"""Forgetting a person in a workspace: `!ws forget @user` (host), `!forget me confirm` (the person,
in every workspace they are in), `doryo forget @user [--workspace ID]`.

In one transaction per workspace:
- what they said is deleted: their messages' text in the session history (the row stays, as a
  redaction leaves it, so that the history's numbering has no gap; its sender becomes their
  pseudonym), every memory they said or made, and what was derived from their messages
  (summaries); the raw events the bot still holds of them (its inbox keeps handled events a
  week);
- what is theirs alone goes: membership rows, their DM's workspace choice, their reminders,
  which room members the bot counted;
- the records of what happened are kept, with their user ID replaced by a stable pseudonym
  (`forgotten-` and 12 hex digits, an HMAC of the workspace and the user ID under the install's
  as_token: the same person is one pseudonym in a workspace, and cannot be found from it by
  trying user IDs): the audit log of actions (who asked, who confirmed), tasks, LLM usage (so
  that costs still add up), sessions they started, codes they made or used.

USER_COLUMNS says, for every column that holds a user ID, what happens to it; a test lists the
schema's columns so that a new one cannot be forgotten. Not covered: user IDs written inside
free text (a message that mentions @bob is another person's message); the workspace's host
(a workspace needs one: make someone else host first); connections made at Composio (revoke
them there, or with `!connections`).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal

import asyncpg

from bot.core import strings
from bot.core.errors import UserError

How = Literal["pseudonym", "delete", "kept"]

_SESSION_ROOMS = "room_id IN (SELECT room_id FROM sessions WHERE workspace_id = $1)"
_OWN = "workspace_id = $1"


@dataclass(frozen=True, slots=True)
class Table:
    scope: str
    """Rows of the workspace ($1)."""
    columns: dict[str, How]


USER_COLUMNS: dict[str, Table] = {
    "workspace_members": Table(_OWN, {"user_id": "delete"}),
    "direct_workspace": Table(_OWN, {"user_id": "delete"}),
    "room_members": Table(_SESSION_ROOMS, {"user_id": "delete"}),
    # Who was told a message of theirs could not be decrypted: theirs alone.
    "undecryptable_notices": Table(_SESSION_ROOMS, {"sender": "delete"}),
    "read_markers": Table(_SESSION_ROOMS, {"user_id": "delete"}),
    "action_notices": Table(
        "action_id IN (SELECT id FROM actions WHERE workspace_id = $1)", {"user_id": "delete"}
    ),
    "followups": Table(_OWN, {"created_by": "delete", "recipient": "delete"}),
    "memory_items": Table(_OWN, {"sender": "delete", "author": "delete"}),
    # The files they shared: the pieces went with memory_items (their sender).
    "documents": Table(_OWN, {"sender": "delete"}),
    # The text goes (below); the row stays with a pseudonym.
    "messages": Table(_SESSION_ROOMS, {"sender": "pseudonym"}),
    "sessions": Table(
        _OWN, {"started_by": "pseudonym", "ended_by": "pseudonym", "history_read_by": "pseudonym"}
    ),
    "actions": Table(
        _OWN,
        {"requested_by": "pseudonym", "confirmed_by": "pseudonym", "cancelled_by": "pseudonym"},
    ),
    "tool_runs": Table(_OWN, {"requested_by": "pseudonym", "confirmed_by": "pseudonym"}),
    "tasks": Table(
        _OWN, {"created_by": "pseudonym", "assignee": "pseudonym", "done_by": "pseudonym"}
    ),
    "llm_usage": Table(_OWN, {"user_id": "pseudonym"}),
    "pending_adoptions": Table(_OWN, {"added_by": "pseudonym"}),
    "workspace_invites": Table(_OWN, {"created_by": "pseudonym"}),
    "workspace_invite_uses": Table(
        "invite_id IN (SELECT id FROM workspace_invites WHERE workspace_id = $1)",
        {"user_id": "pseudonym"},
    ),
    "workspace_deletions": Table(_OWN, {"requested_by": "pseudonym", "decided_by": "pseudonym"}),
    "letta_approvals": Table(
        "agent_id IN (SELECT agent_id FROM letta_agents WHERE workspace_id = $1)",
        {"asked_by": "pseudonym"},
    ),
}

KEPT: dict[tuple[str, str], str] = {
    ("workspaces", "host"): "a workspace needs its host: make someone else host first",
    ("rooms", "direct_user"): "the person's own DM with the bot, not a workspace's",
    ("rooms", "invited_by"): "the person's own DM with the bot, not a workspace's",
    ("blueprint_versions", "created_by"): "the operator's blueprint edits, not a workspace's",
    ("blueprint_pins", "pinned_by"): "the operator's blueprint edits, not a workspace's",
}
"""Columns holding user IDs that forgetting in a workspace leaves alone, and why."""


@dataclass(frozen=True, slots=True)
class Forgotten:
    workspace_id: str
    pseudonym: str
    messages: int
    memories: int
    records: int
    """Rows elsewhere that now carry the pseudonym, or were theirs alone and went."""


def pseudonym(secret: str, workspace_id: str, user_id: str) -> str:
    digest = hmac.new(secret.encode(), f"{workspace_id}\n{user_id}".encode(), hashlib.sha256)
    return f"forgotten-{digest.hexdigest()[:12]}"


def _count(status: str) -> int:
    return int(status.split()[-1])


async def forget_in_workspace(
    conn: asyncpg.Connection, workspace_id: str, user_id: str, *, secret: str
) -> Forgotten:
    """Forget `user_id` in one workspace, in one transaction."""
    host = await conn.fetchval("SELECT host FROM workspaces WHERE id = $1", workspace_id)
    if host is None:
        raise UserError(strings.NO_WORKSPACE_ID.format(workspace=workspace_id))
    alias = pseudonym(secret, workspace_id, user_id)
    async with conn.transaction():
        said = [
            r["event_id"]
            for r in await conn.fetch(
                f"SELECT event_id FROM messages WHERE {_SESSION_ROOMS} AND sender = $2",
                workspace_id,
                user_id,
            )
        ]
        memories = _count(
            await conn.execute(
                """
                DELETE FROM memory_items WHERE workspace_id = $1
                  AND (sender = $2 OR author = $2 OR source_event_ids && $3::text[])
                """,
                workspace_id,
                user_id,
                said,
            )
        )
        messages = _count(
            await conn.execute(
                f"""
                UPDATE messages SET body = NULL, redacted_at = coalesce(redacted_at, now()),
                                    sender = $3
                WHERE {_SESSION_ROOMS} AND sender = $2
                """,
                workspace_id,
                user_id,
                alias,
            )
        )
        records = _count(
            await conn.execute(
                f"""
                DELETE FROM inbox_events WHERE {_SESSION_ROOMS} AND event ->> 'sender' = $2
                """,
                workspace_id,
                user_id,
            )
        )
        for table, spec in USER_COLUMNS.items():
            for column, how in spec.columns.items():
                if (table, column) in (("memory_items", "sender"), ("memory_items", "author")):
                    continue  # done above, with what was derived
                if table == "messages":
                    continue
                if how == "delete":
                    sql = f"DELETE FROM {table} WHERE {spec.scope} AND {column} = $2"
                    records += _count(await conn.execute(sql, workspace_id, user_id))
                elif how == "pseudonym":
                    sql = f"UPDATE {table} SET {column} = $3 WHERE {spec.scope} AND {column} = $2"
                    records += _count(await conn.execute(sql, workspace_id, user_id, alias))
    return Forgotten(workspace_id, alias, messages, memories, records)


async def workspaces_of(conn: asyncpg.Connection, user_id: str) -> list[str]:
    """Every workspace that holds anything of the person: member or not, now or before."""
    rows = await conn.fetch(
        """
        SELECT workspace_id FROM workspace_members WHERE user_id = $1
        UNION SELECT s.workspace_id FROM messages m JOIN sessions s USING (room_id)
              WHERE m.sender = $1
        UNION SELECT workspace_id FROM memory_items WHERE sender = $1 OR author = $1
        """,
        user_id,
    )
    return sorted(r["workspace_id"] for r in rows)
