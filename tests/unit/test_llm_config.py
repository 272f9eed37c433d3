"""The llm: section: new keys load from the example, user-chosen maps are free-form, and bad
values name their key."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from bot.core.config import LlmConfig, example_path, load_config
from bot.core.errors import ConfigError

TOKENS = "appservice:\n  as_token: aaaaaaaa\n  hs_token: hhhhhhhh\n"


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Any:
    path = tmp_path / "config.yaml"
    path.write_text(TOKENS + text)
    return load_config(path, environ=environ or {})


def test_the_examples_llm_section_matches_the_model_defaults() -> None:
    """The pydantic defaults (used by code that builds an LlmConfig itself) and the example's
    values must not drift apart."""
    example = YAML(typ="safe").load(example_path().read_text())["llm"]
    from_example = LlmConfig.model_validate(example)
    minimal = LlmConfig.model_validate(
        {k: example[k] for k in ("providers", "default_model", "fallbacks")}
    )
    assert from_example == minimal


def test_user_chosen_maps_are_free_form(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "llm:\n"
        "  providers:\n"
        "    local: {kind: openai, base_url: 'http://127.0.0.1:11434/v1'}\n"
        "    anthropic: {kind: anthropic, api_key: sk-ant-x, local: false}\n"
        "  aliases: {fast: local/llama3.1, smart: anthropic/claude-haiku-4-5}\n"
        "  fallbacks: [smart]\n"
        "  prices: {'local/*': {input: 0.1, output: 0.2}}\n"
        "  budgets: {workspace_monthly_usd: 25.5, at_limit: downgrade, downgrade_model: fast}\n",
    )
    llm = config.llm
    assert llm.aliases == {"fast": "local/llama3.1", "smart": "anthropic/claude-haiku-4-5"}
    assert llm.prices["local/*"].output == Decimal("0.2")
    assert llm.budgets.workspace_monthly_usd == Decimal("25.5")
    assert llm.providers["anthropic"].local is False and llm.providers["local"].local is None
    assert llm.retries.attempts == 2  # from the example


def test_environment_overrides_nested_llm_keys(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "",
        {
            "DORYO_LLM__BUDGETS__AGENT_MONTHLY_USD": "3.5",
            "DORYO_LLM__RATE_LIMITS__USER__REQUESTS_PER_MINUTE": "5",
            "DORYO_LLM__REDACTION__ENABLED": "true",
        },
    )
    assert config.llm.budgets.agent_monthly_usd == Decimal("3.5")
    assert config.llm.rate_limits.user.requests_per_minute == 5
    assert config.llm.redaction.enabled is True


@pytest.mark.parametrize(
    ("yaml", "key", "message"),
    [
        ("llm:\n  fallbacks: [openai/gpt-4o]\n", "llm.fallbacks", "names no provider 'openai'"),
        ("llm:\n  default_model: openai/gpt-4o\n", "llm.default_model", "names no provider"),
        ("llm:\n  aliases: {fast: openai/x}\n", "llm.aliases", "names no provider"),
        ("llm:\n  aliases: {fast: gpt-4o}\n", "llm.aliases", "alias 'fast': must be"),
        ("llm:\n  prices: {gpt-4o: {input: 1, output: 2}}\n", "llm.prices", "keys are"),
        ("llm:\n  prices: {local/x: {input: -1, output: 2}}\n", "llm.prices.local/x.input", ""),
        ("llm:\n  budgets: {at_limit: shrug}\n", "llm.budgets.at_limit", ""),
        ("llm:\n  budgets: {downgrade_model: x/y}\n", "llm.budgets", "names no provider 'x'"),
        ("llm:\n  retries: {attempts: -1}\n", "llm.retries.attempts", ""),
        ("llm:\n  timeouts: {total: 0}\n", "llm.timeouts.total", ""),
        ("llm:\n  rate_limits: {user: {requests_per_minute: -2}}\n", "llm.rate_limits.user", ""),
        ("llm:\n  retries: {tries: 3}\n", "llm.retries.tries", "unknown key"),
    ],
)
def test_bad_llm_values_name_their_key(tmp_path: Path, yaml: str, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, yaml)
    assert str(caught.value).startswith(f"{key}"), str(caught.value)
    assert message in str(caught.value)
