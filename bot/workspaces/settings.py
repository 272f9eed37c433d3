"""A workspace's settings: what they are, their defaults, and `!ws settings KEY VALUE` parsing."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.commands.parser import number
from bot.core import strings
from bot.core.errors import UserError


class WorkspaceSettings(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    agent: str = Field(default="assistant", pattern=r"^[a-z0-9][a-z0-9_-]{0,63}(@\d+)?$")
    """The blueprint answering in this workspace's sessions (CODE or CODE@VERSION)."""
    act: Literal["members", "host"] = "members"
    """Who may propose actions with @act."""
    threads: bool = True
    """Answers in a thread under the question (on) or as plain replies (off)."""
    budget_usd: float | None = Field(default=None, ge=0, le=1_000_000)
    """Monthly LLM budget of the workspace, in USD. None: no budget of its own."""
    memory_retention_days: int | None = Field(default=None, ge=0, le=36_500)
    """Messages older than this many days are deleted from the history and from memory
    (bot/workspaces/retention.py). 0: kept forever; None: memory.retention_days of the config."""
    composio_account: Literal["host", "requester"] = "host"
    """Whose linked Composio account runs the actions: the host's or the requester's."""
    remove_from_sessions: bool = True
    """Someone who leaves the space (or is kicked or banned) is removed from its sessions too."""
    encrypted: bool = False
    """Sessions started from now on are end-to-end encrypted (needs encryption.enabled)."""


# What people type → the field, with a description for !ws settings.
KEYS: dict[str, tuple[str, str]] = {
    "agent": ("agent", "blueprint answering here, e.g. assistant or planner@3"),
    "act": ("act", "who may propose actions: members or host"),
    "threads": ("threads", "answers in threads: on or off"),
    "budget": ("budget_usd", "monthly LLM budget in USD, or none"),
    "retention": (
        "memory_retention_days",
        "days messages are kept (0: forever; default: the server's setting)",
    ),
    "composio_account": (
        "composio_account",
        "whose account runs Composio actions: host or requester",
    ),
    "remove_from_sessions": (
        "remove_from_sessions",
        "who leaves the space leaves its sessions too: on or off",
    ),
    "encrypted": ("encrypted", "new sessions end-to-end encrypted: on or off"),
}
_ALIASES = {
    "memory_retention": "retention",
    "memory_retention_days": "retention",
    "budget_usd": "budget",
}


def _value(field: str, raw: str) -> Any:
    text = raw.strip().lower()
    if field in ("threads", "remove_from_sessions", "encrypted"):
        if text in ("on", "yes", "true", "1"):
            return True
        if text in ("off", "no", "false", "0"):
            return False
        raise UserError(strings.SETTING_ON_OFF.format(field=field))
    if field == "budget_usd":
        if text in ("none", "off", "-", ""):
            return None
        amount = re.sub(r"^\$|usd$", "", text).strip()
        # float() also reads "nan", "inf", "1e999" and other scripts' digits.
        if not re.fullmatch(r"[0-9]{1,9}(\.[0-9]{1,6})?", amount):
            raise UserError(strings.SETTING_BAD_BUDGET.format(raw=raw))
        return float(amount)
    if field == "memory_retention_days":
        if text in ("default", "none"):
            return None
        if text == "forever":
            return 0
        days = number(text.removesuffix("days").removesuffix("d"))
        if days is None:
            raise UserError(strings.SETTING_BAD_RETENTION.format(raw=raw))
        return days
    if field == "composio_account":
        return text
    return raw.strip()


def updated(settings: WorkspaceSettings, key: str, raw: str) -> WorkspaceSettings:
    """Settings with `key` set from what a person typed. UserError names what is wrong."""
    name = _ALIASES.get(key.lower(), key.lower())
    if name not in KEYS:
        raise UserError(strings.SETTING_UNKNOWN.format(key=key, keys=", ".join(KEYS)))
    field = KEYS[name][0]
    try:
        return WorkspaceSettings.model_validate(
            {**settings.model_dump(), field: _value(field, raw)}
        )
    except ValidationError as e:
        reason = e.errors()[0]["msg"]
        raise UserError(
            strings.SETTING_INVALID.format(raw=raw, name=name, reason=reason)
        ) from None


def describe(settings: WorkspaceSettings) -> list[tuple[str, str, str]]:
    """(key, value as typed, description) for each setting."""
    shown = []
    for key, (field, description) in KEYS.items():
        value = getattr(settings, field)
        if isinstance(value, bool):
            text = "on" if value else "off"
        elif value is None:
            text = "default" if field == "memory_retention_days" else "none"
        else:
            text = str(value)
        shown.append((key, text, description))
    return shown
