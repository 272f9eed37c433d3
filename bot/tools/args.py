"""`@act TOOL key=value …` as typed, to a tool name and raw arguments: a pure function.

Values are strings unless they look like JSON lists or objects (`items='["a", "b"]'`); a key given
twice becomes a list. The tool's schema then checks and converts them ("5" → 5 where a number is
expected).
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from bot.core import strings
from bot.core.errors import UserError

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _value(raw: str) -> Any:
    if raw[:1] in ("[", "{"):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    return raw


def parse_call(text: str) -> tuple[str, dict[str, Any]]:
    try:
        tokens = shlex.split(text)
    except ValueError:
        raise UserError(strings.ACT_QUOTES) from None
    if not tokens:
        raise UserError(strings.ACT_EMPTY)
    name = tokens[0]
    args: dict[str, Any] = {}
    for token in tokens[1:]:
        key, sep, raw = token.partition("=")
        if not sep or not _KEY.match(key):
            raise UserError(strings.ACT_NOT_KEY_VALUE.format(token=token))
        value = _value(raw)
        if key in args:
            previous = args[key] if isinstance(args[key], list) else [args[key]]
            args[key] = [*previous, value]
        else:
            args[key] = value
    return name, args


def looks_like_tool_call(text: str, tool_names: set[str]) -> bool:
    """`@act create_task …` names a tool; `@act make a task for …` is an instruction."""
    first = text.strip().split(maxsplit=1)[0] if text.strip() else ""
    return first in tool_names
