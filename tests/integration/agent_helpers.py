"""Waiting for the agent's answer to a question, as a person sees it after the last edit."""

from __future__ import annotations

from tests.client import JSON, MatrixClient
from tests.poll import eventually

ANSWER_KEY = "org.doryo.answer"


def latest(person: MatrixClient, room: str, event: JSON) -> JSON:
    """The content of `event` after its latest edit."""
    content: JSON = event["content"]
    for other in person.timeline.get(room, []):
        relates = other.get("content", {}).get("m.relates_to", {})
        if relates.get("rel_type") == "m.replace" and relates.get("event_id") == event["event_id"]:
            content = other["content"]["m.new_content"]
    return content


def edits_of(person: MatrixClient, room: str, event_id: str) -> list[JSON]:
    return [
        e
        for e in person.timeline.get(room, [])
        if e.get("content", {}).get("m.relates_to", {}).get("rel_type") == "m.replace"
        and e["content"]["m.relates_to"].get("event_id") == event_id
    ]


async def final_answer(
    person: MatrixClient, room: str, question: str, timeout: float = 30
) -> tuple[JSON, JSON]:
    """(the answer event, its final content) once its status is done or error."""

    async def finished() -> tuple[JSON, JSON] | None:
        await person.sync_once(timeout_ms=300)
        for event in person.timeline.get(room, []):
            block = event.get("content", {}).get(ANSWER_KEY)
            if (
                isinstance(block, dict)
                and block.get("question") == question
                and (event["content"].get("m.relates_to", {}).get("rel_type") != "m.replace")
            ):
                content = latest(person, room, event)
                if content[ANSWER_KEY]["status"] in ("done", "error"):
                    return event, content
        return None

    found = await eventually(finished, timeout=timeout)
    assert found is not None
    return found
