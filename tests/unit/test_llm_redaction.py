"""Secrets out of every prompt and error; contact details out of prompts to external providers."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from bot.core.config import config_from_overrides
from bot.llm.redaction import Redactor, config_secrets
from bot.llm.types import Message, ToolCall


def test_every_secret_of_the_config_is_found() -> None:
    config = config_from_overrides(
        {
            "appservice": {"as_token": "as-token-123456", "hs_token": "hs-token-123456"},
            "llm": {"providers": {"local": {"kind": "openai", "api_key": "sk-local-123456"}}},
            "composio": {"api_key": "comp-key-123456"},
        }
    )
    found = config_secrets(config)
    for secret in ("as-token-123456", "hs-token-123456", "sk-local-123456", "comp-key-123456"):
        assert secret in found


@pytest.mark.parametrize(
    ("text", "external", "expected"),
    [
        ("key sk-live-abcdef123 here", False, "key [secret] here"),
        ("key sk-live-abcdef123 here", True, "key [secret] here"),
        ("mail ann@example.org now", True, "mail [email] now"),
        ("mail ann@example.org now", False, "mail ann@example.org now"),
        ("call +33 6 12 34 56 78 today", True, "call [phone] today"),
        ("call 030 1234 5678", True, "call [phone]"),
        ("on 2026-03-14 at 10:30, 1,200 users, v1.2.3, 192.168.1.10", True, None),
        ("order 20240115 of @bob:matrix.org", True, None),
    ],
)
def test_redact(text: str, external: bool, expected: str | None) -> None:
    redactor = Redactor(["sk-live-abcdef123", "short"], enabled=True)
    assert redactor.redact(text, external=external) == (expected or text)


def test_short_strings_are_not_treated_as_secrets() -> None:
    assert Redactor(["", "abc"]).scrub("abc is fine") == "abc is fine"


def test_redaction_off_keeps_contacts_but_not_secrets() -> None:
    redactor = Redactor(["sk-live-abcdef123"], enabled=False)
    text = "ann@example.org sk-live-abcdef123"
    assert redactor.redact(text, external=True) == "ann@example.org [secret]"


def test_each_kind_can_be_turned_off() -> None:
    redactor = Redactor(enabled=True, emails=False)
    assert redactor.redact("ann@example.org +1 555 123 4567", external=True) == (
        "ann@example.org [phone]"
    )


def test_messages_and_tool_arguments_are_redacted() -> None:
    redactor = Redactor([SecretStr("sk-live-abcdef123").get_secret_value()], enabled=True)
    call = ToolCall.parse("c1", "send", '{"to": "ann@example.org"}')
    out = redactor.messages(
        [Message.user("token sk-live-abcdef123"), Message.assistant("", [call])], external=True
    )
    assert out[0].content == "token [secret]"
    assert out[1].tool_calls[0].arguments == {"to": "[email]"}


def test_nothing_to_do_returns_the_messages_as_they_are() -> None:
    messages = [Message.user("ann@example.org")]
    assert Redactor().messages(messages, external=True) == messages
