"""The action card (SPEC §3): what people read and the org.doryo.action block programs read.
Pure functions: an action in, message content out; a reaction key in, its meaning out.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from appservice.matrix import JSON, markdown_content
from bot import strings
from bot.actions.store import Action

ACTION_KEY = "org.doryo.action"
CONFIRM = "✅"
CANCEL = "❌"

# Variation selectors and skin tones do not change what a reaction means.
_MODIFIERS = re.compile("[\ufe0e\ufe0f\U0001f3fb-\U0001f3ff]")
_CONFIRMING = {"✅", "✔", "☑", "👍"}
_CANCELLING = {"❌", "✖"}

Meaning = Literal["confirm", "cancel"]


def reaction_meaning(key: str) -> Meaning | None:
    bare = _MODIFIERS.sub("", key.strip())
    if bare in _CONFIRMING:
        return "confirm"
    if bare in _CANCELLING:
        return "cancel"
    return None


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 300 else text[:297] + "…"


def _status_line(action: Action, summary: str | None) -> str:
    match action.status:
        case "awaiting_confirm":
            return strings.CARD_AWAITING
        case "running":
            return strings.CARD_RUNNING.format(by=action.confirmed_by)
        case "done":
            return strings.CARD_DONE.format(by=action.confirmed_by, summary=summary or "")
        case "error":
            return strings.CARD_ERROR.format(error=action.error or "")
        case "cancelled":
            return strings.CARD_CANCELLED.format(by=action.cancelled_by)
        case _:
            return strings.CARD_EXPIRED


def card_content(
    action: Action, host: str, *, summary: str | None = None, reply_to: str | None = None
) -> JSON:
    """The card's content for the action's current status (a reply to the request, if any)."""
    lines = [strings.CARD_TITLE.format(code=action.code, tool=action.tool)]
    if action.args:
        lines += [strings.CARD_ARG.format(key=k, value=_value(v)) for k, v in action.args.items()]
    else:
        lines.append(strings.CARD_NO_ARGS)
    lines.append("")
    lines.append(
        strings.CARD_WHO.format(
            requested_by=action.requested_by,
            host=host,
            expires=action.expires_at.strftime("%Y-%m-%d %H:%M UTC"),
            code=action.code,
        )
    )
    lines.append(_status_line(action, summary))
    content = markdown_content("\n".join(lines), reply_to=reply_to)
    content[ACTION_KEY] = {
        "id": action.code,
        "tool": action.tool,
        "args": action.args,
        "requested_by": action.requested_by,
        "status": action.status,
        "result": action.result,
    }
    return content
