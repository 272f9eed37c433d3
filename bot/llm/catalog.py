"""The models the configuration names: a reference ("<provider>/<model>" or an alias) resolved,
the chain of models a call tries, and each model's roles (for the admin API and `!agent`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.core import strings
from bot.core.config import LlmConfig
from bot.core.errors import ConfigError, UnknownModel
from bot.llm.pricing import Price


@dataclass(frozen=True, slots=True)
class ModelRef:
    provider: str
    model: str

    @property
    def ref(self) -> str:
        return f"{self.provider}/{self.model}"

    def __str__(self) -> str:
        return self.ref


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model the configuration names, for `GET /_doryo/v1/llm/models` and `!agent`."""

    ref: str
    provider: str
    kind: str
    local: bool
    roles: tuple[str, ...]
    """default, fallback, downgrade, alias:NAME, priced (from llm.prices)."""
    price: Price | None
    """The llm.prices override (USD per million tokens), if any; otherwise genai-prices."""
    circuit: str
    """closed, open or half_open: the provider's circuit breaker in this process."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (the admin API): prices as strings, USD per million tokens."""
        price = None
        if self.price is not None:
            price = {
                "input": str(self.price.input),
                "output": str(self.price.output),
                "cached_input": None
                if self.price.cached_input is None
                else str(self.price.cached_input),
            }
        return {
            "ref": self.ref,
            "provider": self.provider,
            "kind": self.kind,
            "local": self.local,
            "roles": list(self.roles),
            "price": price,
            "circuit": self.circuit,
        }


class ModelCatalog:
    def __init__(self, config: LlmConfig) -> None:
        self.config = config
        self._check_refs()

    def _check_refs(self) -> None:
        """Every model the configuration refers to resolves (ConfigError naming the key)."""
        refs = [(f"llm.fallbacks.{i}", ref) for i, ref in enumerate(self.config.fallbacks)]
        if self.config.budgets.downgrade_model:
            refs.append(("llm.budgets.downgrade_model", self.config.budgets.downgrade_model))
        for key, ref in refs:
            try:
                self.resolve(ref)
            except UnknownModel:
                raise ConfigError(
                    f"{ref!r} is neither an alias of llm.aliases nor a configured provider/model",
                    key=key,
                ) from None

    def resolve(self, ref: str | None = None) -> ModelRef:
        """A model reference ("<provider>/<model>" or an alias; None: the default model) as a
        ModelRef. Raises UnknownModel, whose text can go to a room."""
        name = ref or self.config.default_model
        target = self.config.aliases.get(name, name)
        provider, _, model = target.partition("/")
        if not name or provider not in self.config.providers or not model:
            aliases = ", ".join(f"`{a}`" for a in sorted(self.config.aliases))
            raise UnknownModel(
                strings.LLM_UNKNOWN_MODEL.format(
                    ref=name or "(none configured)",
                    providers=", ".join(sorted(self.config.providers)) or "none",
                    aliases=strings.LLM_UNKNOWN_MODEL_ALIASES.format(aliases=aliases)
                    if aliases
                    else "",
                )
            )
        return ModelRef(provider, model)

    def chain(
        self, model: str | None = None, fallbacks: Sequence[str] | None = None
    ) -> list[ModelRef]:
        """The models a call tries, in order, without repeats."""
        refs = [self.resolve(model)]
        for ref in self.config.fallbacks if fallbacks is None else fallbacks:
            resolved = self.resolve(ref)
            if resolved not in refs:
                refs.append(resolved)
        return refs

    def roles(self) -> dict[ModelRef, tuple[str, ...]]:
        """Each model the configuration names, with what it is named as, in config order."""
        roles: dict[ModelRef, list[str]] = {}

        def add(ref: str, role: str) -> None:
            try:
                resolved = self.resolve(ref)
            except UnknownModel:
                return
            roles.setdefault(resolved, []).append(role)

        config = self.config
        if config.default_model:
            add(config.default_model, "default")
        for ref in config.fallbacks:
            add(ref, "fallback")
        if config.budgets.downgrade_model:
            add(config.budgets.downgrade_model, "downgrade")
        for alias, ref in config.aliases.items():
            add(ref, f"alias:{alias}")
        for ref in config.prices:
            if not ref.endswith("/*"):
                add(ref, "priced")
        return {ref: tuple(its) for ref, its in roles.items()}
