"""What the bot writes must fit and must say only what it means.

- `inline`: text from people (topics, titles, memories, names) shown inside the bot's Markdown
  on one line, its Markdown escaped: it cannot add lines, links, images or emphasis.
- `page_of`: a list split into pages a person can read and the homeserver accepts. Synapse
  refuses an event over 65,536 bytes; a list of 120 sessions was over it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from appservice.matrix import markdown_content
from bot.commands.parser import number
from bot.core import strings
from bot.core.errors import UserError

PAGE_LINES = 25
"""Lines a person reads on one screen."""
CONTENT_BYTES = 32_000
"""Of the 65,536 bytes of an event, what its content may take: the envelope (signatures,
hashes, prev_events) needs a few hundred, and an edit of it would carry it twice."""

_SPECIAL = re.compile(r"([\\`*_\[\]<>~|#!])")
_SPACE = re.compile(r"\s+")


def inline(text: str, limit: int = 300) -> str:
    """`text` on one line, at most `limit` characters (cut at a word, with "…"), Markdown
    escaped."""
    flat = _SPACE.sub(" ", text).strip()
    if len(flat) > limit:
        cut = flat[: limit - 1]
        space = cut.rfind(" ")
        flat = (cut[:space] if space > limit // 2 else cut).rstrip() + "…"
    return _SPECIAL.sub(r"\\\1", flat)


def content_size(markdown: str) -> int:
    """Bytes of the notice made of `markdown`, as sent (JSON with non-ASCII escaped: never less
    than what the homeserver counts)."""
    return len(json.dumps(markdown_content(markdown, notice=True)).encode())


def page_number(argument: str, usage: str) -> int:
    """The page asked for: nothing is page 1; anything but a plain number is refused."""
    if not argument.strip():
        return 1
    page = number(argument)
    if page is None or page < 1:
        raise UserError(strings.USAGE.format(usage=usage))
    return page


def _fit(line: str, budget: int) -> str:
    """One line alone over the budget is cut until it fits."""
    while content_size(line) > budget and len(line) > 1:
        line = line[: len(line) * 3 // 4] + "…"
    return line


def pages(
    header: str, lines: Sequence[str], *, budget: int = CONTENT_BYTES, per_page: int = PAGE_LINES
) -> list[list[str]]:
    """`lines` in pages of at most `per_page` lines whose text, with the header and a footer,
    stays within `budget` bytes."""
    room = budget - content_size(header) - 200  # the footer
    found: list[list[str]] = [[]]
    for line in lines:
        line = _fit(line, room)
        page = found[-1]
        if page and (
            len(page) >= per_page or content_size("\n".join([header, *page, line])) > budget - 200
        ):
            found.append([line])
        else:
            page.append(line)
    return found


def page_of(
    header: str,
    lines: Sequence[str],
    *,
    page: int,
    command: str,
    budget: int = CONTENT_BYTES,
    per_page: int = PAGE_LINES,
) -> str:
    """The notice showing page `page` of the list; `command` is how to ask for another page
    (`!sessions` → "`!sessions 2` for the next")."""
    split = pages(header, lines, budget=budget, per_page=per_page)
    if page > len(split):
        raise UserError(strings.PAGE_BEYOND.format(pages=len(split), command=command))
    body = [header, *split[page - 1]]
    if len(split) > 1:
        if page < len(split):
            footer = strings.PAGE_NEXT.format(
                page=page, pages=len(split), command=command, next=page + 1
            )
        else:
            footer = strings.PAGE_LAST.format(page=page, pages=len(split))
        body += ["", footer]  # a blank line: otherwise Markdown makes it part of the last item
    return "\n".join(body)
