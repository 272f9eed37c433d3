"""What a call cost, in USD.

In order: a price in llm.prices ("<provider>/<model>", then "<provider>/*"); 0 for a local
provider; genai-prices (offline data shipped with the package), matched by the provider's API URL
and then by the model name alone; otherwise unknown (None: recorded without a cost, logged once).
A price can depend on when the call was made (DeepSeek's off-peak hours), so cost() takes the time.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

from bot.core.config import LlmPriceConfig
from bot.llm.types import Usage

log = logging.getLogger(__name__)

MILLION = Decimal(1_000_000)
ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens. `cached_input` None: cached tokens cost as much as others."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None

    def cost(self, usage: Usage) -> Decimal:
        cached = usage.cached_tokens if self.cached_input is not None else 0
        uncached = usage.input_tokens - cached
        total = uncached * self.input + usage.output_tokens * self.output
        if self.cached_input is not None:
            total += cached * self.cached_input
        return total / MILLION


@dataclass(frozen=True, slots=True)
class PricedProvider:
    """What pricing needs to know of a provider."""

    name: str
    base_url: str
    local: bool


class Pricing:
    def __init__(self, overrides: Mapping[str, LlmPriceConfig]) -> None:
        self._overrides = {
            ref: Price(p.input, p.output, p.cached_input) for ref, p in overrides.items()
        }
        self._unknown_logged: set[str] = set()

    def override(self, provider: str, model: str) -> Price | None:
        return self._overrides.get(f"{provider}/{model}") or self._overrides.get(f"{provider}/*")

    def cost(
        self, provider: PricedProvider, model: str, usage: Usage, at: datetime | None = None
    ) -> Decimal | None:
        """The cost of a call made at `at` (default: now)."""
        price = self.override(provider.name, model)
        if price is not None:
            return price.cost(usage)
        if provider.local:
            return ZERO
        if usage.input_tokens == 0 and usage.output_tokens == 0:
            return ZERO
        return self._genai_price(provider, model, usage, at or datetime.now(UTC))

    def _genai_price(
        self, provider: PricedProvider, model: str, usage: Usage, at: datetime
    ) -> Decimal | None:
        price_usage = PriceUsage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cached_tokens,
            cache_write_tokens=usage.cache_write_tokens,
        )
        try:
            return calc_price(
                price_usage, model, provider_api_url=provider.base_url, genai_request_timestamp=at
            ).total_price
        except LookupError:
            pass
        try:
            # A proxy or an unknown URL: the model name alone, when genai-prices knows it.
            return calc_price(price_usage, model, genai_request_timestamp=at).total_price
        except LookupError:
            ref = f"{provider.name}/{model}"
            if ref not in self._unknown_logged:
                self._unknown_logged.add(ref)
                log.warning(
                    "no price known for %s; its calls are recorded without a cost "
                    "(set llm.prices.%s to count them)",
                    ref,
                    ref,
                )
            return None
