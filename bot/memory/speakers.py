"""Who said a message, in the text its vector is made of.

Questions name people ("Would Grace like a bookshop gift card?"); their messages say "I …".
Search gives the speaker a weight of its own (bot.memory.service.fuse); some models also find
more when the vector itself knows who spoke: "Grace: Nothing beats a thick novel", the name in
the place of the session's topic. Measured per model (docs/architecture.md): all-mpnet-base-v2
gains (recall@5 0.818 → 0.895 on bench/recall.py, 0.810 → 0.836 on the labelled team set; with
the topic beside the name 0.865 and 0.836), all-MiniLM-L6-v2 loses (0.784 → 0.741 on the team
set), so it is the model's property (`names_the_speaker`), and every path that embeds an item —
the indexer, an edit, `!remember`, the backfill, `doryo reindex` — asks here, so that an item's
vector is made of the same text whichever path made it.

The name is the sender's display name (from the rooms' member events), else their Matrix ID's
localpart. A display name is anyone's choice: it is flattened to one line and cut, and only
ever embedded — never shown to the model from here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.memory.text import embedding_text

NAME_CHARS = 64
"""Longer display names are cut: a name is a few words, and the model reads 256–384 tokens."""

Names = Callable[[Sequence[str]], Awaitable[Mapping[str, str]]]
"""User IDs → display names, for those who have one (MemoryStore.display_names)."""


class Embeddable(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def context(self) -> str | None: ...
    @property
    def sender(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Piece:
    """A text about to be embedded that is not an item yet (an edit's new text)."""

    kind: str
    text: str
    context: str | None
    sender: str | None


def speaker(user_id: str, display_name: str | None) -> str:
    """How a message's sender is named in what is embedded."""
    name = " ".join((display_name or "").split())[:NAME_CHARS].strip()
    return name or user_id.removeprefix("@").split(":", 1)[0][:NAME_CHARS]


def _said_by(item: Embeddable) -> str | None:
    """Whose words a message item is (summaries, facts and documents are nobody's message)."""
    return item.sender if item.kind == "message" and item.sender else None


async def speakers_of(items: Iterable[Embeddable], names: Names) -> dict[str, str]:
    """The speakers of the message items, by user ID (one lookup for all of them)."""
    senders = sorted({s for item in items if (s := _said_by(item))})
    if not senders:
        return {}
    known = await names(senders)
    return {s: speaker(s, known.get(s)) for s in senders}


async def embedding_texts(
    items: Sequence[Embeddable], *, with_speaker: bool, names: Names
) -> list[str]:
    """What to embed for each item: embedding_text, with the speaker where the model gains."""
    if not with_speaker:
        return [embedding_text(i.text, i.context) for i in items]
    who = await speakers_of(items, names)
    return [embedding_text(i.text, i.context, who.get(_said_by(i) or "")) for i in items]
