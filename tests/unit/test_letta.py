"""Letta's pure parts: folding streamed messages, the question message, what a decided card
sends back, the blueprint's backend check, and the config keys an old config gains."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.actions.store import Action
from bot.blueprints.spec import build, check_spec, validate_resolved
from bot.core import strings
from bot.core.config import load_config
from bot.core.errors import BlueprintError
from bot.letta.approvals import outcome_message
from bot.letta.store import Approval
from bot.letta.stream import TurnState
from bot.letta.turn import question_message, returns_message, speaker_name, tool_return
from bot.llm import Usage


def test_token_fragments_make_one_answer_and_messages_make_paragraphs() -> None:
    state = TurnState()
    shown = [
        state.add({"message_type": "reasoning_message", "id": "r", "reasoning": "hm"}),
        state.add({"message_type": "assistant_message", "id": "m1", "content": "Hel"}),
        state.add({"message_type": "assistant_message", "id": "m1", "content": "lo."}),
        state.add({"message_type": "ping", "id": "p"}),
        state.add(
            {"message_type": "assistant_message", "id": "m2", "content": [{"text": "Bye."}]}
        ),
        state.add({"message_type": "stop_reason", "stop_reason": "end_turn"}),
        state.add(
            {"message_type": "usage_statistics", "prompt_tokens": 10, "completion_tokens": 3}
        ),
        state.add(
            {"message_type": "usage_statistics", "prompt_tokens": 5, "cached_input_tokens": 2}
        ),
    ]
    assert shown == ["", "Hel", "lo.", "", "\n\nBye.", "", "", ""]
    assert state.text == "Hello.\n\nBye."
    assert state.stop_reason == "end_turn" and not state.requires_approval
    assert state.usage == Usage(input_tokens=15, output_tokens=3, cached_tokens=2)


def test_approval_request_fragments_make_one_call() -> None:
    state = TurnState()
    first = {"name": "create_task", "arguments": '{"ti', "tool_call_id": "call_1"}
    rest = {"name": None, "arguments": 'tle": "Ship"}', "tool_call_id": None}
    for call in (first, rest):
        state.add(
            {
                "message_type": "approval_request_message",
                "id": "approval-1",
                "tool_call": call,
                "tool_calls": [call],
            }
        )
    state.add({"message_type": "stop_reason", "stop_reason": "requires_approval"})
    assert state.requires_approval and state.request_message_id == "approval-1"
    [call] = state.calls.values()
    assert (call.tool_call_id, call.name, call.arguments) == (
        "call_1",
        "create_task",
        {"title": "Ship"},
    )


def test_a_whole_response_and_an_error_message() -> None:
    state = TurnState()
    state.add_response(
        {
            "messages": [{"message_type": "assistant_message", "id": "m", "content": "Hi"}],
            "stop_reason": {"stop_reason": "end_turn"},
            "usage": {"prompt_tokens": 4, "completion_tokens": 1},
        }
    )
    assert (state.text, state.stop_reason, state.usage.total_tokens) == ("Hi", "end_turn", 5)
    state.add({"message_type": "error_message", "message": "boom", "detail": "LLM down"})
    assert state.error == "LLM down"


def test_the_question_carries_its_sender() -> None:
    message = question_message("@ann.lee:example.org", "workspace W, session S", "Why?")
    assert message["role"] == "user" and message["name"] == "ann_lee"
    assert (
        message["content"]
        == "ann.lee (@ann.lee:example.org) asks in workspace W, session S:\nWhy?"
    )
    assert speaker_name("@=/+:x") == "user"
    assert len(speaker_name("@" + "a" * 100 + ":x")) == 64


def _action(status: str, **changes: Any) -> Action:
    values: dict[str, Any] = {
        "id": 3,
        "workspace_id": "w",
        "room_id": "!r:x",
        "request_event_id": "$q/call_1",
        "card_event_id": "$card",
        "tool": "create_task",
        "tool_version": "1",
        "args": {"title": "Ship"},
        "requested_by": "@bob:x",
        "source": "letta",
        "status": status,
        "idempotency_key": "doryo-k",
        "confirmed_by": None,
        "cancelled_by": None,
        "result": None,
        "error": None,
        "expires_at": datetime.now(UTC),
        "created_at": datetime.now(UTC),
        "started_at": None,
    }
    values.update(changes)
    return Action(**values)


APPROVAL = Approval(
    request_key="$q/call_1",
    agent_id="agent-1",
    tool_call_id="call_1",
    request_message_id="approval-1",
    other_returns=[tool_return("call_2", "error: one at a time", ok=False)],
    question_event_id="$q",
    asked_by="@bob:x",
    blueprint="colleague",
    blueprint_version=1,
)


def test_a_run_action_goes_back_as_tool_returns() -> None:
    done = _action("done", confirmed_by="@alice:x", result={"task_id": 1})
    message = outcome_message(done, APPROVAL, "Task #1 created")
    assert message == returns_message(
        [tool_return("call_1", "Task #1 created", ok=True), *APPROVAL.other_returns]
    )
    assert message["type"] == "tool_return"
    assert message["tool_returns"][0] == {
        "tool_call_id": "call_1",
        "status": "success",
        "tool_return": "Task #1 created",
    }
    assert outcome_message(done, APPROVAL, None)["tool_returns"][0]["tool_return"] == (
        '{"task_id": 1}'
    )
    failed = _action("error", confirmed_by="@alice:x", error="no such user")
    returned = outcome_message(failed, APPROVAL, None)["tool_returns"][0]
    assert returned["status"] == "error" and "no such user" in returned["tool_return"]


@pytest.mark.parametrize(
    ("action", "why"),
    [
        (_action("cancelled", cancelled_by="@alice:x"), "cancelled by @alice:x"),
        (_action("expired"), "expired"),
        (_action("error", confirmed_by="@alice:x", error=strings.INTERRUPTED), "restart"),
    ],
)
def test_an_action_not_run_goes_back_as_a_denial(action: Action, why: str) -> None:
    message = outcome_message(action, APPROVAL, None)
    assert message["type"] == "approval"
    denial, other = message["approvals"]
    assert denial["approve"] is False and denial["tool_call_id"] == "call_1"
    assert why in denial["reason"]
    assert other["tool_call_id"] == "call_2" and other["status"] == "error"


def test_a_letta_blueprint_needs_a_letta_server() -> None:
    spec = {"code": "colleague", "instructions": "Help.", "backend": "letta"}
    assert check_spec(spec).backend == "letta"
    with pytest.raises(BlueprintError) as caught:
        validate_resolved("colleague", spec, resolve_model=lambda r: r, known_tools=set())
    assert caught.value.fields == ["backend"] and "letta.base_url" in str(caught.value)
    validate_resolved(
        "colleague", spec, resolve_model=lambda r: r, known_tools=set(), letta_enabled=True
    )
    with pytest.raises(BlueprintError):
        check_spec({"code": "colleague", "backend": "other"})
    row = {
        "code": "colleague",
        "version": 1,
        "resolved": spec,
        "spec": spec,
        "extends": None,
        "extends_version": None,
        "source": "api",
        "created_by": None,
        "created_at": datetime.now(UTC),
    }
    assert build(row, current=True).backend == "letta"
    assert build({**row, "resolved": {"instructions": "x"}}, current=True).backend == "native"


def test_an_old_config_gains_the_letta_keys(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "appservice:\n  as_token: aaaaaaaa\n  hs_token: hhhhhhhh\n"
        "letta:\n  base_url: http://127.0.0.1:8283\n  api_key: ''\n"
    )
    config = load_config(path, environ={})
    assert config.letta.enabled and config.letta.fallback_to_native
    assert config.letta.model == "" and config.letta.timeout == 120
    updated = path.read_text()
    assert "fallback_to_native: true" in updated
    assert "When the Letta server cannot be reached" in updated  # with its comment
