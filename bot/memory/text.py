"""Pure text work for memory: redacting contact details, splitting long texts, and the
extractive summary used when no model is at hand. No I/O here; table-driven unit tests.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from bot.core import strings

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}\b"
)

# A candidate phone number: an optional +country code, an optional (area code), then groups of
# digits separated by single spaces, dots or dashes. Whether it really is one (and not a date,
# an IP address, a version or an amount) is decided by _is_phone.
_PHONE = re.compile(
    r"(?<![\w+/.:,-])"
    r"(?P<number>"
    r"(?P<plus>\+)?(?:\d{1,4}[ .-])?"
    r"(?P<paren>\(\d{1,5}\)[ .-]?)?"
    r"\d{1,15}(?:[ .-]\d{1,15}){0,6}"
    r")"
    r"(?![\w/:-]|[.,]\d)"
)
_DATE = re.compile(r"^(\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{4})$")
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_SEPARATED = re.compile(r"[ .-]")


def _is_phone(match: re.Match[str]) -> bool:
    number: str = match["number"]
    digits = sum(c.isdigit() for c in number)
    if digits > 15:
        return False
    if match["plus"] or match["paren"]:
        return digits >= 7
    if _DATE.match(number) or _IPV4.match(number):
        return False
    # Without a +country code or an (area code): at least 8 digits in three groups or more
    # ("030 1234 5678", "555-123-4567"), or a national number in two ("0171-2345678"), so that
    # amounts, years, order and ticket numbers stay.
    groups = _SEPARATED.split(number)
    if not all(g.isdigit() for g in groups):
        return False
    if len(groups) >= 3:
        return digits >= 8
    return len(groups) == 2 and groups[0].startswith("0") and digits >= 9


def redact(text: str, *, emails: bool, phone_numbers: bool) -> str:
    """`text` with e-mail addresses and/or phone numbers replaced by placeholders."""
    if emails and "@" in text:
        text = _EMAIL.sub(strings.REDACTED_EMAIL, text)
    if phone_numbers:
        text = _PHONE.sub(
            lambda m: strings.REDACTED_PHONE if _is_phone(m) else m.group(0),
            text,
        )
    return text


def embedding_text(text: str, context: str | None, speaker: str | None = None) -> str:
    """What is embedded for a stored text: its context (a session topic, a document title)
    first, since a short message alone often does not say what it is about; or, for models
    that gain from it (bot.memory.speakers), who said it instead: "Grace: I love novels". Those
    models lose by the topic beside the name (a general room's topic says nothing of a
    message): measured in bot.memory.speakers."""
    if speaker:
        return f"{speaker}: {text}"
    return f"{context}: {text}" if context else text


def chunk_text(text: str, words: int, overlap: int | None = None) -> list[str]:
    """Split `text` into pieces of at most about `words` words, overlapping a little, so that
    each fits the embedding model. Short texts come back whole (as the only piece)."""
    parts = text.split()
    if len(parts) <= words:
        return [text.strip()] if text.strip() else []
    overlap = max(0, min(words // 8 if overlap is None else overlap, words - 1))
    step = words - overlap
    pieces = []
    for start in range(0, len(parts), step):
        pieces.append(" ".join(parts[start : start + words]))
        if start + words >= len(parts):
            break
    return pieces


# Words that say little about what a message is about; the summary scores the others.
STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves
    ok okay yes yeah thanks thank lol hi hey sure get got let lets going go one like think
    know""".split()
)
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'_-]*")


def _words(text: str) -> list[str]:
    return [w for w in (m.lower() for m in _WORD.findall(text)) if w not in STOPWORDS]


def extractive_summary(
    messages: Sequence[tuple[str | None, str, datetime]],
    *,
    max_chars: int = 1500,
    line_chars: int = 240,
) -> str:
    """A summary made of the most informative messages, for when no model is available.

    `messages` are (sender, text, time) in time order. Each message is scored by how many of the
    stretch's frequent content words it holds (a message that shares the conversation's topic
    scores high; "ok thanks" nothing, "Morning!" little); the best are kept, in time order,
    within `max_chars`, leaving out those far below the best.
    """
    if not messages:
        return ""
    counts: Counter[str] = Counter()
    per_message = []
    for _, text, _ in messages:
        words = _words(text)
        per_message.append(words)
        counts.update(set(words))
    scored = []
    for index, words in enumerate(per_message):
        if not words:
            continue
        # Words seen in several messages carry the topic; sqrt damps long messages.
        weight = sum(math.log1p(counts[w]) for w in set(words))
        scored.append((weight / math.sqrt(len(words) + 1), index))
    scored.sort(key=lambda s: (-s[0], s[1]))
    # Greetings and one-word answers say little next to the stretch's real content.
    if scored:
        floor = scored[0][0] / 3
        scored = [s for s in scored if s[0] >= floor]

    start, end = messages[0][2], messages[-1][2]
    header = strings.MEMORY_SUMMARY_HEADER.format(
        count=len(messages), start=f"{start:%Y-%m-%d %H:%M}", end=f"{end:%Y-%m-%d %H:%M}"
    )
    budget = max_chars - len(header)
    chosen: list[tuple[int, str]] = []
    for _, index in scored:
        sender, text, _ = messages[index]
        text = " ".join(text.split())
        if len(text) > line_chars:
            text = text[: line_chars - 1].rstrip() + "…"
        line = strings.MEMORY_SUMMARY_LINE.format(
            sender=sender or strings.MEMORY_SUMMARY_SOMEONE, text=text
        )
        if len(line) + 1 > budget:
            continue
        budget -= len(line) + 1
        chosen.append((index, line))
    chosen.sort()
    return "\n".join([header, *(line for _, line in chosen)])
