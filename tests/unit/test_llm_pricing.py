"""Cost maths against known prices: config overrides, local models, genai-prices."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from bot.core.config import LlmPriceConfig
from bot.llm.pricing import Price, PricedProvider, Pricing
from bot.llm.types import Usage

OPENAI = PricedProvider("openai", "https://api.openai.com/v1", local=False)
ANTHROPIC = PricedProvider("anthropic", "https://api.anthropic.com", local=False)
DEEPSEEK = PricedProvider("deepseek", "https://api.deepseek.com", local=False)
PROXY = PricedProvider("proxy", "https://llm-proxy.example.com/v1", local=False)
OLLAMA = PricedProvider("ollama", "http://127.0.0.1:11434/v1", local=True)
# Prices can depend on the hour (DeepSeek is cheaper 16:30-00:30 UTC): price at a fixed time.
DAYTIME = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("provider", "model", "usage", "expected"),
    [
        # gpt-4o-mini: $0.15 input, $0.60 output per million
        (OPENAI, "gpt-4o-mini", Usage(1000, 1000), "0.00075"),
        # gpt-4o: $2.50 input, $1.25 cached input, $10 output per million
        (OPENAI, "gpt-4o", Usage(1_000_000, 0), "2.5"),
        (OPENAI, "gpt-4o", Usage(1_000_000, 0, cached_tokens=1_000_000), "1.25"),
        (OPENAI, "gpt-4o", Usage(1000, 500, cached_tokens=500), "0.006875"),
        # claude-haiku-4-5: $1 input, $5 output per million
        (ANTHROPIC, "claude-haiku-4-5", Usage(2000, 1000), "0.007"),
        (DEEPSEEK, "deepseek-chat", Usage(1000, 1000), "0.00137"),
        # An unknown URL: priced by the model name alone.
        (PROXY, "gpt-4o-mini", Usage(1000, 1000), "0.00075"),
        # Local: free.
        (OLLAMA, "llama3.1", Usage(10**6, 10**6), "0"),
    ],
)
def test_known_prices(provider: PricedProvider, model: str, usage: Usage, expected: str) -> None:
    assert Pricing({}).cost(provider, model, usage, at=DAYTIME) == Decimal(expected)


def test_a_price_follows_the_time_of_the_call() -> None:
    off_peak = datetime(2026, 11, 21, 17, 0, tzinfo=UTC)
    usage = Usage(1000, 1000)
    assert Pricing({}).cost(DEEPSEEK, "deepseek-chat", usage, at=off_peak) == Decimal("0.000685")


def test_unknown_models_have_no_price() -> None:
    assert Pricing({}).cost(PROXY, "my-finetune-7b", Usage(10, 10)) is None
    assert Pricing({}).cost(PROXY, "my-finetune-7b", Usage()) == 0


def test_config_prices_win_even_for_local_models() -> None:
    pricing = Pricing(
        {
            "ollama/llama3.1": LlmPriceConfig(input=Decimal("0.2"), output=Decimal("0.4")),
            "openai/*": LlmPriceConfig(
                input=Decimal(1), output=Decimal(2), cached_input=Decimal("0.5")
            ),
        }
    )
    assert pricing.cost(OLLAMA, "llama3.1", Usage(10**6, 10**6)) == Decimal("0.6")
    assert pricing.cost(OLLAMA, "qwen", Usage(10**6, 10**6)) == 0
    assert pricing.cost(OPENAI, "gpt-4o", Usage(10**6, 10**6, cached_tokens=10**6)) == Decimal(
        "2.5"
    )


def test_price_without_a_cached_rate_charges_cached_tokens_in_full() -> None:
    assert Price(Decimal(2), Decimal(4)).cost(Usage(500_000, 0, cached_tokens=500_000)) == 1
