"""LettaService (ctx.letta): what the rest of Doryo asks of Letta."""

from __future__ import annotations

import logging

from bot.actions.flow import Actions
from bot.agent.answer import Answer
from bot.blueprints import Blueprint
from bot.core import strings
from bot.core.config import LettaConfig
from bot.core.errors import LettaUnavailable, UserError
from bot.core.replies import Replier
from bot.letta.agents import LettaAgents
from bot.letta.approvals import LettaApprovals
from bot.letta.client import LettaClient
from bot.letta.context import LettaContext
from bot.letta.store import LettaAgentStore, LettaApprovalStore
from bot.letta.turn import AgentGone, Turn, Turns, question_message
from bot.sessions.store import Session
from bot.workspaces.store import Workspace

log = logging.getLogger(__name__)


class LettaService:
    def __init__(self, ctx: LettaContext, actions: Actions, config: LettaConfig) -> None:
        self.ctx = ctx
        self.client = LettaClient(config)
        self.store = LettaApprovalStore(ctx.db)
        self.agents = LettaAgents(ctx, self.client, LettaAgentStore(ctx.db))
        self.turns = Turns(ctx, actions, self.client, self.store)
        self.approvals = LettaApprovals(ctx, actions, self.client, self.store, self.turns)

    async def close(self) -> None:
        await self.client.close()

    async def answer(
        self,
        sender: str,
        reply: Replier,
        workspace: Workspace,
        session: Session | None,
        blueprint: Blueprint,
        answer: Answer,
        question: str,
    ) -> bool:
        """@ask for a blueprint with `backend: letta`. True: answered (or the answer ended, saying
        why); False: Letta could not be reached, the room was told, and the built-in agent is to
        answer instead (letta.fallback_to_native)."""
        try:
            await self._ask(sender, reply, workspace, session, blueprint, answer, question)
            return True
        except LettaUnavailable as e:
            fallback = self.client.config.fallback_to_native
            if e.reachable or not fallback or answer.text.strip():
                await answer.fail(str(e))
                return True
            log.warning("Letta did not answer (%s); the built-in agent answers instead", e)
            await reply.send_notice(strings.LETTA_FALLBACK.format(problem=e))
            return False

    async def _ask(
        self,
        sender: str,
        reply: Replier,
        workspace: Workspace,
        session: Session | None,
        blueprint: Blueprint,
        answer: Answer,
        question: str,
    ) -> None:
        """Answer an @ask as the workspace's Letta agent for this blueprint version. Raises
        LettaUnavailable (the answer is left to the caller then), UserError."""
        topic = session.topic if session and session.topic else strings.SESSION_UNTITLED
        place = strings.ASK_PLACE.format(name=workspace.name, topic=topic)
        message = question_message(sender, place, question)
        for attempt in range(2):
            agent = await self.agents.ensure(workspace, blueprint)
            waiting = await self.store.waiting(agent.agent_id)
            if waiting is not None:
                raise UserError(strings.LETTA_BUSY.format(code=waiting))
            turn = Turn(workspace, reply.room_id, sender, reply.event_id, blueprint, agent)
            try:
                await self.turns.run(turn, [message], answer, reply)
                return
            except AgentGone:
                if attempt:
                    raise LettaUnavailable(
                        strings.LETTA_AGENT_ERROR.format(reason="the agent is gone"),
                        reachable=True,
                    ) from None
                await self.agents.forget(agent)
