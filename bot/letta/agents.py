"""Which Letta agent answers for a workspace and blueprint version, made on first use.

One agent per (workspace, blueprint, version, Letta server), recorded in letta_agents. Its
memory blocks: `persona` = the blueprint's instructions; `workspace` = a summary of the
workspace (name, host, sessions with their topics and summaries), rewritten with
`agents.blocks.update` when it changed since it was last written. Agents are tagged, so an agent
made just before a crash (and never recorded) is found again instead of made twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

from bot.blueprints import Blueprint
from bot.core import strings
from bot.letta.client import FAILURES, LettaClient
from bot.letta.context import LettaContext
from bot.letta.store import LettaAgent, LettaAgentStore
from bot.workspaces.store import Workspace

log = logging.getLogger(__name__)

PERSONA = "persona"
WORKSPACE = "workspace"
BLOCK_LIMIT = 6000
"""Characters a memory block may hold (Letta's default limit is 5000; ours a little more)."""
SESSIONS_SHOWN = 12


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def workspace_summary(ctx: LettaContext, workspace: Workspace) -> str:
    """The `workspace` block: what the agent always knows of the workspace."""
    sessions = await ctx.sessions.of_workspace(workspace.id)
    sessions = sorted(sessions, key=lambda s: s.started_at, reverse=True)[:SESSIONS_SHOWN]
    lines = [
        strings.LETTA_SESSION_LINE.format(
            topic=s.topic or strings.SESSION_UNTITLED,
            status=s.status,
            date=s.started_at.strftime("%Y-%m-%d"),
            summary=f": {_clip(' '.join(s.summary.split()), 300)}" if s.summary else "",
        )
        for s in sessions
    ]
    text = strings.LETTA_SUMMARY.format(
        name=workspace.name,
        host=workspace.host,
        sessions="\n".join(lines) or strings.LETTA_NO_SESSIONS,
    )
    return _clip(text, BLOCK_LIMIT)


def tags(workspace_id: str, blueprint: Blueprint) -> list[str]:
    return ["doryo", f"doryo-workspace:{workspace_id}", f"doryo-blueprint:{blueprint.ref}"]


class LettaAgents:
    def __init__(self, ctx: LettaContext, client: LettaClient, store: LettaAgentStore) -> None:
        self.ctx = ctx
        self.client = client
        self.store = store
        self._making: dict[tuple[str, str], asyncio.Lock] = {}

    async def ensure(self, workspace: Workspace, blueprint: Blueprint) -> LettaAgent:
        """The workspace's agent for this blueprint version, made if there is none yet, with a
        current workspace block. Raises LettaUnavailable."""
        summary = await workspace_summary(self.ctx, workspace)
        key = (workspace.id, blueprint.ref)
        async with self._making.setdefault(key, asyncio.Lock()):
            agent = await self.store.get(
                workspace.id, blueprint.code, blueprint.version, self.client.base_url
            )
            if agent is None:
                agent = await self._find_or_make(workspace, blueprint, summary)
        if agent.summary_sha256 != _sha(summary):
            await self._update_summary(agent, summary)
        return agent

    async def _find_or_make(
        self, workspace: Workspace, blueprint: Blueprint, summary: str
    ) -> LettaAgent:
        sdk = self.client.sdk
        wanted = tags(workspace.id, blueprint)
        try:
            page = await sdk.agents.list(tags=wanted, match_all_tags=True, limit=1)
            found = page.items  # one page: the first match is enough
            if found:
                agent_id = found[0].id
                sha = None  # unknown: written again below
                log.info("found Letta agent %s for %s/%s", agent_id, workspace.id, blueprint.ref)
            else:
                created = await sdk.agents.create(**self._spec(workspace, blueprint, summary))
                agent_id = created.id
                sha = _sha(summary)
                log.info("made Letta agent %s for %s/%s", agent_id, workspace.id, blueprint.ref)
        except FAILURES as e:
            raise self.client.error(e) from None
        return await self.store.add(
            LettaAgent(
                workspace.id,
                blueprint.code,
                blueprint.version,
                self.client.base_url,
                agent_id,
                sha,
            )
        )

    def _spec(self, workspace: Workspace, blueprint: Blueprint, summary: str) -> dict[str, Any]:
        config = self.client.config
        spec: dict[str, Any] = {
            "name": f"doryo-{workspace.id}-{blueprint.code}-v{blueprint.version}",
            "description": f"{blueprint.name} in the Doryo workspace {workspace.name}",
            "memory_blocks": [
                {
                    "label": PERSONA,
                    "value": _clip(blueprint.instructions, BLOCK_LIMIT),
                    "limit": BLOCK_LIMIT,
                },
                {"label": WORKSPACE, "value": summary, "limit": BLOCK_LIMIT},
            ],
            "tags": tags(workspace.id, blueprint),
            "metadata": {
                "doryo_workspace": workspace.id,
                "doryo_blueprint": blueprint.code,
                "doryo_blueprint_version": blueprint.version,
            },
        }
        if config.model:
            spec["model"] = config.model
        if config.embedding:
            spec["embedding"] = config.embedding
        return spec

    async def _update_summary(self, agent: LettaAgent, summary: str) -> None:
        try:
            await self.client.sdk.agents.blocks.update(
                WORKSPACE, agent_id=agent.agent_id, value=summary, limit=BLOCK_LIMIT
            )
        except FAILURES as e:
            # The agent still answers with the block it has; try again at the next question.
            log.warning("could not update the workspace block of %s: %s", agent.agent_id, e)
            return
        await self.store.set_summary(agent.agent_id, _sha(summary))

    async def forget(self, agent: LettaAgent) -> None:
        """The server no longer has this agent (deleted by hand, a reset server)."""
        log.warning(
            "Letta agent %s is gone from %s; making a new one", agent.agent_id, agent.server
        )
        await self.store.forget(agent.agent_id)
