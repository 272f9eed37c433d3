"""A Letta tool call's card, decided: the outcome goes back to the agent, and its continuation is
posted in the card's thread.

Actions call `settled` for every action that reached its end (bot.actions.flow's `on_settled`).
For a Letta card (actions.source = 'letta'), one UPDATE claims its letta_approvals row, so the
outcome is sent once however many times it is settled:
- done: a tool return with the result's summary (status success); error: its error (status
  error);
- cancelled (❌, !cancel), expired, or interrupted by a restart: a denial (approve: false, with
  the reason);
- other tool calls of the same request get the returns kept for them.
Then the agent's continuation streams into a new answer in the card's thread (a new card if it
asks for another writing tool). Letta away: the claim is released and the thread says so; the
outcome is sent again when Doryo next starts (`recover`), as are outcomes a restart came between.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from appservice.errors import HomeserverUnavailable
from bot.actions.flow import Actions
from bot.actions.store import Action
from bot.agent.answer import Answer
from bot.core import strings
from bot.core.errors import LettaUnavailable
from bot.core.replies import Replier
from bot.letta.client import LettaClient
from bot.letta.context import LettaContext
from bot.letta.store import Approval, LettaAgent, LettaApprovalStore
from bot.letta.turn import AgentGone, Turn, Turns, returns_message, tool_return

log = logging.getLogger(__name__)


def _result_text(action: Action, summary: str | None) -> str:
    if summary:
        return summary
    return json.dumps(action.result, ensure_ascii=False) if action.result else "done"


def outcome_message(action: Action, approval: Approval, summary: str | None) -> dict[str, Any]:
    """What Letta is sent for a decided card."""
    others = list(approval.other_returns)
    if action.status == "done":
        ran = tool_return(approval.tool_call_id, _result_text(action, summary), ok=True)
        return returns_message([ran, *others])
    if action.status == "error" and action.error != strings.INTERRUPTED:
        error = strings.LETTA_TOOL_FAILED.format(error=action.error or "failed")
        return returns_message([tool_return(approval.tool_call_id, error, ok=False), *others])
    if action.status == "cancelled":
        why = strings.LETTA_WHY_CANCELLED.format(by=action.cancelled_by)
    elif action.status == "expired":
        why = strings.LETTA_WHY_EXPIRED
    else:
        why = strings.LETTA_WHY_INTERRUPTED
    denial = {
        "type": "approval",
        "tool_call_id": approval.tool_call_id,
        "approve": False,
        "reason": strings.LETTA_DECLINED.format(why=why),
    }
    return {"type": "approval", "approvals": [denial, *others]}


class LettaApprovals:
    def __init__(
        self,
        ctx: LettaContext,
        actions: Actions,
        client: LettaClient,
        store: LettaApprovalStore,
        turns: Turns,
    ) -> None:
        self.ctx = ctx
        self.actions = actions
        self.client = client
        self.store = store
        self.turns = turns

    async def settled(self, action: Action, summary: str | None) -> None:
        """An action reached its end: if it is a Letta tool call, tell the agent (once)."""
        if action.source != "letta" or action.request_event_id is None:
            return
        approval = await self.store.claim(action.request_event_id)
        if approval is None:
            return
        await self._continue(action, approval, summary)

    async def recover(self) -> None:
        """Outcomes decided while Doryo was stopping, or while Letta was away: send them now."""
        for action_id in await self.store.settled_unreported():
            action = await self.actions.store.get(action_id)
            if action is not None:
                log.info("telling Letta how %s ended (not told before)", action.code)
                await self.settled(action, None)

    async def _continue(self, action: Action, approval: Approval, summary: str | None) -> None:
        ctx = self.ctx
        workspace = await ctx.workspaces.get(action.workspace_id)
        if workspace is None or action.card_event_id is None:
            return
        blueprint = await ctx.blueprints.get(approval.blueprint, approval.blueprint_version)
        agent = LettaAgent(
            workspace.id,
            blueprint.code,
            blueprint.version,
            self.client.base_url,
            approval.agent_id,
            None,
        )
        turn = Turn(
            workspace,
            action.room_id,
            approval.asked_by,
            approval.question_event_id,
            blueprint,
            agent,
        )
        # Answers to this action's end: sent once, however often this runs.
        reply = Replier(ctx.matrix, ctx.sent, action.room_id, f"letta.{action.idempotency_key}")
        answer = Answer(
            ctx.matrix,
            reply,
            action.room_id,
            approval.question_event_id,
            threaded=True,
            thread_root=action.card_event_id,
            domain=ctx.config.homeserver.domain,
            edit_interval=ctx.config.agent.edit_interval,
        )
        answer.start()
        message = outcome_message(action, approval, summary)
        try:
            await self.turns.run(turn, [message], answer, reply)
        except LettaUnavailable as e:
            if not e.reachable:
                await self.store.release(approval.request_key)  # sent again at the next start
            await answer.fail(str(e))
        except AgentGone:
            await answer.fail(strings.LETTA_AGENT_ERROR.format(reason="the agent is gone"))
        except HomeserverUnavailable:
            await self.store.release(approval.request_key)
            raise
        except BaseException:
            await answer.fail(strings.ANSWER_FAILED)
            raise
        finally:
            answer.close()
