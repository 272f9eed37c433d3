"""The @act flow (docs/spec.md §3): propose → card → host's ✅ → run exactly once → result.

- A proposal is validated against the tool's schema before anything is posted.
- The card carries org.doryo.action, says where it stands on its first line, and mentions the
  host (a pill, `m.mentions`: their client notifies them); the bot DMs the host a link once if
  the host is not online. The bot does not react on its own card: in Element its ✅ read as "✅ 1"
  — approved — before anyone approved, and the host's ✅ (sent with U+FE0F) made a second pill.
- A ✅ (✔️ ☑️ 👍) from the host or a delegate, read from the space's power levels at that moment,
  starts the run: one UPDATE … WHERE status = 'awaiting_confirm' decides, so of concurrent or
  redelivered ✅ exactly one wins. ❌ from host, delegate or requester cancels. Anyone else's
  reaction changes nothing; the bot says so once per person and card, next to the card. A ✅
  whose redaction has already reached the bot does not count.
- Every status change edits the card; the result goes in the card's thread.
- After a restart, cards awaiting confirmation stay valid; an action caught running is finished if
  its tool is idempotent, else marked `error: interrupted` — never run twice.
- Whoever waits on an action's end is told once it has one (`on_settled`: a Letta agent whose
  tool call the card is gets the result or the denial, bot.letta.approvals).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from appservice.matrix import markdown_content, pill, pilled
from bot.actions.card import card_content, code_block, code_span, long_values, reaction_meaning
from bot.actions.store import Action, ActionStore
from bot.core import strings
from bot.core.errors import ExternalToolUnavailable, UserError
from bot.core.inbox import InboxStore
from bot.core.leases import Leases
from bot.core.replies import Replier, thread_safely
from bot.core.tasks import BackgroundTasks
from bot.rooms.direct import direct_room
from bot.rooms.presence import is_here
from bot.sessions.rooms import room_link
from bot.tools.context import ToolContext
from bot.tools.registry import Tool, ToolCall, ToolRegistry, ToolResult
from bot.workspaces.access import current_role
from bot.workspaces.store import Workspace

log = logging.getLogger(__name__)


class ActionsContext(ToolContext, Protocol):
    """What the @act flow uses of the bot's Context: a tool run's view, the inbox (to see an
    event's place) and the bot's background tasks."""

    @property
    def inbox(self) -> InboxStore: ...

    @property
    def tasks(self) -> BackgroundTasks: ...


def event_link(room_id: str, event_id: str, domain: str) -> str:
    return f"https://matrix.to/#/{room_id}/{event_id}?via={domain}"


PART = 30_000
"""A long argument is posted in parts of this many characters (an event holds 64 KiB)."""


def _parts(value: str) -> list[str]:
    return [value[i : i + PART] for i in range(0, len(value), PART)] or [""]


Settled = Callable[[Action, str | None], Coroutine[Any, Any, None]]
"""Told of an action that reached its end (done, error, cancelled, expired), with the result's
summary when it ran."""


class Actions:
    def __init__(
        self,
        ctx: ActionsContext,
        store: ActionStore,
        tools: ToolRegistry,
        *,
        on_settled: Settled | None = None,
        leases: Leases | None = None,
    ) -> None:
        """`leases`: this process's claims, when others may run actions on the same database
        (each run records the process's worker key; recovery leaves live processes' runs)."""
        self.ctx = ctx
        self.store = store
        self.tools = tools
        self.on_settled = on_settled
        self._leases = leases
        self._running: set[int] = set()
        """The actions this process runs now."""
        self.expiry = timedelta(hours=ctx.config.actions.expiry_hours)
        self.run_timeout = ctx.config.actions.run_timeout
        self.runs_started = 0
        """Runs this process started (tests read it)."""

    # Proposing -------------------------------------------------------------------------------

    def tool(self, name: str, allowed: set[str] | None = None) -> Tool:
        tool = self.tools.get(name)
        if tool is None or (allowed is not None and name not in allowed):
            names = sorted(allowed if allowed is not None else self.tools.names())
            raise UserError(strings.UNKNOWN_TOOL.format(tool=name, tools=", ".join(names)))
        return tool

    async def propose(
        self,
        workspace: Workspace,
        room_id: str,
        tool_name: str,
        raw_args: dict[str, Any],
        requested_by: str,
        reply: Replier,
        *,
        request_event_id: str | None,
        source: str = "act",
        allowed: set[str] | None = None,
        reply_to: str | None = None,
    ) -> Action:
        """Validate, record and post the card. Handled twice, the same request posts one card.
        The card is a reply to `reply_to`, by default to the request."""
        tool = self.tool(tool_name, allowed)
        validated = tool.validate(raw_args)
        # What must hold for the run at all (a linked account, say) is said before any card.
        looking = ToolCall(self.ctx, workspace, room_id, requested_by, None, "")
        await tool.check(looking, validated)
        args = validated.model_dump(mode="json", exclude_defaults=True)
        action, _ = await self.store.create(
            workspace.id,
            room_id,
            tool.name,
            tool.version,
            args,
            requested_by,
            datetime.now(UTC) + self.expiry,
            request_event_id=request_event_id,
            source=source,
        )
        if action.card_event_id is not None:
            return action
        card_id = await reply.send(
            card_content(action, workspace.host, reply_to=reply_to or request_event_id)
        )
        await self.store.set_card(action.id, card_id)
        for key, value in long_values(action):
            for n, part in enumerate(_parts(value), start=1):
                label = f" ({n}/{len(_parts(value))})" if len(value) > PART else ""
                text = strings.CARD_ARG_FULL.format(
                    key=code_span(key), code=action.code, part=label
                )
                await reply.send(
                    markdown_content(
                        f"{text}\n\n{code_block(part)}", notice=True, thread_root=card_id
                    )
                )
        if not await is_here(self.ctx, workspace.host) and await self.store.claim_host_notice(
            action.id
        ):
            await self._tell_host(workspace, action, room_id, card_id)
        log.info("proposed %s (%s) in %s for %s", action.code, tool.name, room_id, requested_by)
        return action

    async def _tell_host(
        self, workspace: Workspace, action: Action, room_id: str, card: str
    ) -> None:
        domain = self.ctx.config.homeserver.domain
        text = strings.HOST_DM.format(
            code=action.code,
            tool=action.tool,
            by=pill(action.requested_by),
            room=room_link(room_id, domain),
            card=event_link(room_id, card, domain),
        )
        dm = await direct_room(self.ctx, workspace.host)
        txn_id = f"doryo.h.{action.idempotency_key}"
        if await self.ctx.sent.get(txn_id) is None:
            event_id = await self.ctx.matrix.send_markdown(dm, text, notice=True, txn_id=txn_id)
            await self.ctx.sent.record(txn_id, dm, event_id)

    # Reactions and commands ----------------------------------------------------------------

    async def on_reaction(
        self, room_id: str, sender: str, target: str, key: str, reaction_id: str, reply: Replier
    ) -> None:
        meaning = reaction_meaning(key)
        if meaning is None:
            return
        action = await self.store.by_card(target)
        if action is None or action.room_id != room_id:
            return
        if await self.ctx.inbox.redaction_pending(room_id, reaction_id):
            log.info("%s on %s was taken back before it was handled", key, action.code)
            return
        workspace = await self.ctx.workspaces.get(action.workspace_id)
        assert workspace is not None
        if meaning == "confirm":
            if await current_role(self.ctx, workspace, sender) in ("host", "delegate"):
                await self.confirm(action, sender)
            else:
                await self._tell_outsider(action, workspace, sender, reply)
        elif await self.may_cancel(workspace, action, sender):
            await self.cancel(action, sender)
        else:
            await self._tell_outsider(action, workspace, sender, reply)

    async def may_cancel(self, workspace: Workspace, action: Action, user: str) -> bool:
        return user == action.requested_by or await current_role(self.ctx, workspace, user) in (
            "host",
            "delegate",
        )

    async def _tell_outsider(
        self, action: Action, workspace: Workspace, sender: str, reply: Replier
    ) -> None:
        if action.status != "awaiting_confirm" or not await self.store.claim_outsider_notice(
            action.id, sender
        ):
            return
        assert action.card_event_id is not None
        text = strings.OUTSIDER_REACTION.format(
            user=pill(sender), host=pill(workspace.host), code=action.code
        )
        await reply.send_near(text, action.card_event_id, mentions=[sender])

    async def confirm(self, action: Action, by: str) -> bool:
        """Start the run, if this confirmation is the one that counts. True if it did."""
        started = await self.store.start(action.id, by, self._runner())
        if started is None:
            return False
        self.runs_started += 1
        self._spawn_run(started)
        return True

    def _runner(self) -> int | None:
        return self._leases.key if self._leases is not None and self._leases.key else None

    def _spawn_run(self, action: Action) -> None:
        self._running.add(action.id)
        task = self.ctx.tasks.spawn(self._run(action), f"action {action.code}")
        task.add_done_callback(lambda _: self._running.discard(action.id))

    async def cancel(self, action: Action, by: str) -> bool:
        cancelled = await self.store.cancel(action.id, by)
        if cancelled is None:
            return False
        await self._report(cancelled)
        self._settled(cancelled)
        return True

    def _settled(self, action: Action, summary: str | None = None) -> None:
        if self.on_settled is not None:
            self.ctx.tasks.spawn(self.on_settled(action, summary), f"end of {action.code}")

    # Running ------------------------------------------------------------------------------------

    async def _run(self, action: Action) -> None:
        started_at = datetime.now(UTC)
        started = time.perf_counter()
        # The card says "running" while the tool already runs: nobody waits for that edit,
        # except the edit that ends the action, which must come after it.
        running_edit = self.ctx.tasks.spawn(self._edit_card(action), f"card of {action.code}")
        workspace = await self.ctx.workspaces.get(action.workspace_id)
        tool = self.tools.get(action.tool)
        result: ToolResult | None = None
        error: str | None = None
        try:
            if workspace is None or tool is None:
                raise UserError(strings.TOOL_GONE.format(tool=action.tool))
            call = ToolCall(
                ctx=self.ctx,
                workspace=workspace,
                room_id=action.room_id,
                requested_by=action.requested_by,
                confirmed_by=action.confirmed_by,
                idempotency_key=action.idempotency_key,
            )
            async with asyncio.timeout(self.run_timeout):
                result = await tool.run(call, tool.args.model_validate(action.args))
        except ExternalToolUnavailable as e:
            error = str(e) if e.reached else strings.TOOL_NOTHING_RAN.format(error=e)
        except UserError as e:
            error = str(e)
        except TimeoutError:
            error = strings.TOOL_TIMED_OUT.format(seconds=self.run_timeout)
        except Exception:
            log.exception("action %s (%s) failed", action.code, action.tool)
            error = strings.TOOL_FAILED
        duration_ms = int((time.perf_counter() - started) * 1000)
        data = result.data if result else None
        finished = await self.store.finish(
            action.id,
            "done" if result else "error",
            result=data,
            error=error,
            summary=result.summary if result else None,
        )
        await self.store.record_run(
            finished or action,
            "done" if result else "error",
            result=data,
            external_ids=result.external_ids if result else [],
            error=error,
            duration_ms=duration_ms,
            started_at=started_at,
        )
        await asyncio.wait([running_edit])
        if finished is None:
            return
        try:
            await self._report(finished)
        finally:
            self._settled(finished, finished.summary)

    async def _report(self, action: Action) -> None:
        """The action's end on its card, and its result in the card's thread; then marked
        reported. Failing (the homeserver away), it stays unreported: start and maintenance
        report it later (report_pending). Both steps are idempotent."""
        if not await self._edit_card(action, summary=action.summary):
            return
        if action.status in ("done", "error") and action.card_event_id is not None:
            text = action.summary or strings.CARD_ERROR.format(error=action.error or "")
            await self._post_in_thread(action, text)
        await self.store.mark_reported(action.id)

    async def report_pending(self, finished_before: datetime) -> int:
        """Report the ends that a crash or an absent homeserver kept off their cards."""
        pending = await self.store.unreported(finished_before)
        for action in pending:
            log.info("reporting the end of %s (%s) on its card", action.code, action.status)
            await self._report(action)
        return len(pending)

    async def _edit_card(self, action: Action, *, summary: str | None = None) -> bool:
        """Edit the card to the action's status; False if the homeserver did not take it."""
        if action.card_event_id is None:
            return True
        workspace = await self.ctx.workspaces.get(action.workspace_id)
        host = workspace.host if workspace else ""
        txn_id = f"doryo.c.{action.idempotency_key}.{action.status}"
        try:
            await self.ctx.matrix.edit(
                action.room_id,
                action.card_event_id,
                card_content(action, host, summary=summary),
                txn_id=txn_id,
            )
        except Exception as e:  # the status is in the database; the card is a view of it
            log.warning("could not update the card of %s: %s", action.code, e)
            return False
        return True

    async def _post_in_thread(self, action: Action, text: str) -> None:
        assert action.card_event_id is not None
        txn_id = f"doryo.t.{action.idempotency_key}"
        if await self.ctx.sent.get(txn_id) is not None:
            return
        content = markdown_content(
            text, thread_root=action.card_event_id, mentions=pilled(text) or None
        )
        await thread_safely(self.ctx.matrix, action.room_id, content)
        event_id = await self.ctx.matrix.send_event(
            action.room_id, "m.room.message", content, txn_id
        )
        await self.ctx.sent.record(txn_id, action.room_id, event_id)

    # Housekeeping -------------------------------------------------------------------------------

    async def expire_due(self) -> int:
        expired = await self.store.expire_due()
        for action in expired:
            await self._report(action)
            self._settled(action)
        return len(expired)

    async def recover(self, started_before: datetime) -> None:
        """Actions caught running by a stop or a crash: finish or mark them, never run twice.

        Only those whose process is gone: its liveness lock is not held (bot.core.leases), or,
        for a run that recorded no process, it started before this process began (database
        time): a ✅ handled since then is this process's own run, however early it came. Each
        is adopted first (one recovery each, whoever else looks).
        """
        live = await self._leases.live_workers() if self._leases is not None else set()
        for action, runner in await self.store.orphaned(started_before, live):
            if action.id in self._running or not await self.store.adopt(
                action.id, runner, self._runner()
            ):
                continue
            tool = self.tools.get(action.tool)
            if tool is not None and tool.idempotent:
                log.info("finishing %s (%s), cut short by a restart", action.code, action.tool)
                self._spawn_run(action)
                continue
            log.warning(
                "%s (%s) was cut short by a restart; marking it interrupted",
                action.code,
                action.tool,
            )
            finished = await self.store.finish(
                action.id, "error", result=None, error=strings.INTERRUPTED
            )
            await self.store.record_run(
                action,
                "interrupted",
                result=None,
                external_ids=[],
                error=strings.INTERRUPTED,
                duration_ms=0,
                started_at=action.started_at or datetime.now(UTC),
            )
            if finished is not None:
                await self._report(finished)
                self._settled(finished)
        await self.report_pending(finished_before=started_before)
