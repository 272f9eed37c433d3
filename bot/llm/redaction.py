"""Keeping things out of prompts and logs.

- Configured secrets (tokens, API keys: every SecretStr of the config) are replaced by
  `[secret]` in every prompt, to any provider, and in every provider error text the router logs
  or shows. Always on.
- With llm.redaction.enabled, e-mail addresses become `[email]` and phone numbers `[phone]` in
  prompts sent to providers that are not local.

The e-mail and phone number patterns are memory's (bot.memory.text.redact), so that what memory
stores and what a provider sees are redacted alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import replace

from pydantic import BaseModel, SecretStr

from bot.llm.types import Message, ToolCall
from bot.memory.text import redact as redact_contacts

SECRET = "[secret]"
# Shorter "secrets" (a placeholder, an empty key) would match ordinary words.
MIN_SECRET_LENGTH = 8


def config_secrets(model: BaseModel) -> list[str]:
    """Every SecretStr value in a (nested) pydantic model, e.g. the whole Config."""
    found: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    walk(model)
    return found


class Redactor:
    def __init__(
        self,
        secrets: Iterable[str] = (),
        *,
        enabled: bool = False,
        emails: bool = True,
        phone_numbers: bool = True,
    ) -> None:
        unique = sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
        self._secrets = re.compile("|".join(map(re.escape, unique))) if unique else None
        self.enabled = enabled
        self._emails = enabled and emails
        self._phones = enabled and phone_numbers

    def scrub(self, text: str) -> str:
        """Configured secrets out of `text`: for logs, error messages and every prompt."""
        if self._secrets is None or not text:
            return text
        return self._secrets.sub(SECRET, text)

    def redact(self, text: str, *, external: bool) -> str:
        """Secrets always; e-mail addresses and phone numbers too when going to an external
        provider with redaction on."""
        text = self.scrub(text)
        if not external or not text:
            return text
        if self._emails or self._phones:
            text = redact_contacts(text, emails=self._emails, phone_numbers=self._phones)
        return text

    def messages(self, messages: Sequence[Message], *, external: bool) -> list[Message]:
        if self._secrets is None and not (external and (self._emails or self._phones)):
            return list(messages)
        out = []
        for m in messages:
            calls = tuple(
                ToolCall.parse(c.id, c.name, self.redact(c.arguments_json, external=external))
                for c in m.tool_calls
            )
            out.append(
                replace(m, content=self.redact(m.content, external=external), tool_calls=calls)
            )
        return out
