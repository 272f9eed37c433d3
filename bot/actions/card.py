"""The action card (docs/spec.md §3): what people read and the org.doryo.action block programs
read. Pure functions: an action in, message content out; a reaction key in, its meaning out.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from appservice.matrix import JSON, markdown_content, pill
from bot.actions.store import Action
from bot.core import strings

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


INLINE_MAX = 200
"""Longer values, or values over several lines, are shown as a block."""
CARD_MAX = 4000
"""Longer values are shown in full in the card's thread (a card must stay under the homeserver's
event size, and an edit carries it twice)."""


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=1)


def _fence(text: str, mark: str = "`") -> str:
    """A fence longer than any run of `mark` in the text: the text cannot close it."""
    longest = max((len(run) for run in re.findall(f"{re.escape(mark)}+", text)), default=0)
    return mark * max(3, longest + 1)


def code_span(text: str) -> str:
    """`text` as inline code, exactly as it is (no Markdown, links or mentions inside)."""
    longest = max((len(run) for run in re.findall("`+", text)), default=0)
    ticks = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def code_block(text: str) -> str:
    fence = _fence(text)
    return f"{fence}\n{text}\n{fence}"


def long_values(action: Action) -> list[tuple[str, str]]:
    """(key, value) of the arguments too long for the card: posted in its thread, in full."""
    return [(k, _text(v)) for k, v in action.args.items() if len(_text(v)) > CARD_MAX]


def _argument(key: str, value: Any) -> list[str]:
    text = _text(value)
    name = code_span(key)
    if len(text) > CARD_MAX:
        return [strings.CARD_ARG_IN_THREAD.format(key=name, length=f"{len(text):,}")]
    if "\n" in text or len(text) > INLINE_MAX:
        return [strings.CARD_ARG.format(key=name, value=""), "", code_block(text), ""]
    return [strings.CARD_ARG.format(key=name, value=code_span(text))]


def status_line(action: Action, host: str) -> str:
    match action.status:
        case "awaiting_confirm":
            return strings.CARD_AWAITING.format(host=pill(host))
        case "running":
            return strings.CARD_RUNNING.format(by=pill(action.confirmed_by))
        case "done":
            return strings.CARD_DONE.format(by=pill(action.confirmed_by))
        case "error":
            return strings.CARD_ERROR.format(error=action.error or "")
        case "cancelled":
            return strings.CARD_CANCELLED.format(by=pill(action.cancelled_by))
        case _:
            return strings.CARD_EXPIRED


STATUS_WORDS = {
    "awaiting_confirm": "waiting for confirmation",
    "running": "running",
    "done": "done",
    "error": "failed",
    "cancelled": "cancelled",
    "expired": "expired",
}
"""What people read for an action's status (`!actions`); programs read org.doryo.action."""


def card_content(
    action: Action, host: str, *, summary: str | None = None, reply_to: str | None = None
) -> JSON:
    """The card's content for the action's current status (a reply to the request, if any):
    where it stands first, then exactly what runs, with every argument in full, as code (what
    people see is what runs: nothing in a value is read as Markdown, a link or a mention)."""
    lines = [
        status_line(action, host),
        "",
        strings.CARD_TITLE.format(code=action.code, tool=action.tool),
    ]
    if action.args:
        for key, value in action.args.items():
            lines += _argument(key, value)
    else:
        lines.append(strings.CARD_NO_ARGS)
    lines += ["", strings.CARD_REQUESTED.format(by=pill(action.requested_by))]
    if action.status == "awaiting_confirm":
        lines.append(
            strings.CARD_HOW.format(
                code=action.code, expires=action.expires_at.strftime("%Y-%m-%d %H:%M UTC")
            )
        )
    elif summary:
        lines += ["", strings.CARD_RESULT.format(summary=summary)]
    # Who must act or be told is mentioned for real: the host while it waits, the requester
    # once it ends.
    mentions = [host] if action.status == "awaiting_confirm" else [action.requested_by]
    content = markdown_content("\n".join(lines), reply_to=reply_to, mentions=mentions)
    in_thread = {key for key, _ in long_values(action)}
    content[ACTION_KEY] = {
        "id": action.code,
        "tool": action.tool,
        # A value too long for the card is in its thread (args_in_thread names them): the
        # card, and each edit of it, must stay under the homeserver's event size.
        "args": {
            k: (strings.CARD_ARG_ELSEWHERE.format(length=len(_text(v))) if k in in_thread else v)
            for k, v in action.args.items()
        },
        **({"args_in_thread": sorted(in_thread)} if in_thread else {}),
        "requested_by": action.requested_by,
        "status": action.status,
        "result": action.result,
    }
    return content
