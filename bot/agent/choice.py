"""Which blueprint answers in a room: the session's own (`!agent use`), else the workspace's
(`!ws settings agent`), else `assistant`. "code" follows the current version; "code@3" pins."""

from __future__ import annotations

import logging

from bot.blueprints import Blueprint, BlueprintStore
from bot.commands.parser import number
from bot.core import strings
from bot.core.errors import BlueprintError, UserError
from bot.sessions.store import Session
from bot.workspaces.store import Workspace

log = logging.getLogger(__name__)

DEFAULT = "assistant"


def parse_ref(ref: str) -> tuple[str, int | None]:
    code, _, version = ref.strip().partition("@")
    if not version:
        return code.lower(), None
    if (n := number(version)) is None:
        raise UserError(strings.AGENT_BAD_REF.format(ref=ref))
    return code.lower(), n


def configured_ref(workspace: Workspace | None, session: Session | None) -> str:
    if session is not None and session.agent:
        return session.agent
    if workspace is not None:
        return workspace.settings.agent
    return DEFAULT


async def blueprint_for(
    blueprints: BlueprintStore, workspace: Workspace | None, session: Session | None
) -> Blueprint:
    ref = configured_ref(workspace, session)
    code, version = parse_ref(ref)
    try:
        return await blueprints.get(code, version)
    except BlueprintError as e:
        if code == DEFAULT and version is None:
            raise
        # A setting naming a blueprint that is gone must not silence the agent.
        log.warning("blueprint %s is not available (%s); answering as %s", ref, e, DEFAULT)
        return await blueprints.get(DEFAULT)
