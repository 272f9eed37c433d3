"""A blueprint as written (a spec: YAML or a command's text) and as resolved (its `extends` chain
merged in and validated), with the checks that name each bad field.

    code: planner                   # a-z, 0-9, _ and -; 2 to 32 characters
    name: Planner
    description: Breaks goals into steps and tasks.
    extends: assistant              # take everything from it, then override
    model: smart                    # "<provider>/<model>" or an alias; "" = llm.default_model
    fallbacks: [local/llama3.1]     # absent = llm.fallbacks
    instructions: |
      You plan ...
    tools: [create_task, search_docs]
    temperature: 0.3
    max_tokens: 1500
    limits:                         # per agent in a workspace; absent = the configured default
      requests_per_minute: 20
      tokens_per_minute: 100000
      monthly_budget_usd: 10
    backend: native                 # native (Doryo's LLM router) or letta (a Letta agent per
                                    # workspace; needs letta.base_url)

Merging `extends`: the child's keys replace the parent's, except `limits`, merged key by key.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from bot.core import strings
from bot.core.errors import BlueprintError, UserError
from bot.llm.types import CallContext, ChatRequest, Limits, Message, ToolSchema

CODE_PATTERN = r"^[a-z][a-z0-9_-]{1,31}$"
Backend = Literal["native", "letta"]
# Not inherited through `extends`: they name the blueprint itself.
OWN_KEYS = ("code", "extends")


class LimitsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_minute: int | None = Field(default=None, ge=0, le=10_000)
    tokens_per_minute: int | None = Field(default=None, ge=0, le=100_000_000)
    monthly_budget_usd: Decimal | None = Field(default=None, ge=0, le=1_000_000)


class BlueprintSpec(BaseModel):
    """The keys a blueprint may have; each is optional in a spec that extends another."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(pattern=CODE_PATTERN)
    name: str | None = Field(default=None, min_length=1, max_length=80)
    description: str | None = Field(default=None, max_length=500)
    extends: str | None = Field(default=None, pattern=CODE_PATTERN)
    model: str | None = Field(default=None, max_length=200)
    fallbacks: list[str] | None = Field(default=None, max_length=10)
    instructions: str | None = Field(default=None, max_length=20_000)
    tools: list[str] | None = Field(default=None, max_length=200)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    limits: LimitsSpec | None = None
    backend: Backend | None = None


@dataclass(frozen=True, slots=True)
class BlueprintLimits:
    """None: the configured default (llm.rate_limits.agent, llm.budgets.agent_monthly_usd)."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    monthly_budget_usd: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Blueprint:
    """One version of a blueprint, resolved (its parents merged in as they were then)."""

    code: str
    version: int
    name: str
    description: str
    model: str
    """"" = llm.default_model."""
    fallbacks: tuple[str, ...] | None
    """None = llm.fallbacks."""
    instructions: str
    tools: tuple[str, ...]
    temperature: float | None
    max_tokens: int | None
    limits: BlueprintLimits
    backend: Backend
    """Who answers as this blueprint: Doryo's LLM router, or a Letta agent (bot.letta)."""
    extends: str | None
    extends_version: int | None
    spec: Mapping[str, Any]
    """As written, before merging its parents."""
    source: str
    created_by: str | None
    created_at: datetime
    current: bool

    @property
    def ref(self) -> str:
        return f"{self.code}@{self.version}"

    def rate_limits(self) -> Limits:
        """The blueprint's agent limits, as an override of the configured ones."""
        return Limits(
            agent_requests_per_minute=self.limits.requests_per_minute,
            agent_tokens_per_minute=self.limits.tokens_per_minute,
            agent_monthly_usd=self.limits.monthly_budget_usd,
        )

    def request(
        self,
        messages: Sequence[Message],
        *,
        context: CallContext,
        tools: Sequence[ToolSchema] = (),
        limits: Limits | None = None,
    ) -> ChatRequest:
        """A router request answering as this blueprint: its instructions first, its model,
        fallbacks, temperature and limits (`limits`, e.g. the workspace's settings, win), only
        the tools it may use, and the call recorded as this agent and version."""
        system = [Message.system(self.instructions)] if self.instructions else []
        return ChatRequest(
            messages=[*system, *messages],
            model=self.model or None,
            fallbacks=self.fallbacks,
            tools=[t for t in tools if t.name in self.tools],
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            context=replace(context, agent=self.code, blueprint_version=self.version),
            limits=self.rate_limits().merged(limits),
        )


def parse_yaml(text: str) -> dict[str, Any]:
    """A spec from YAML text (a file, or the text under `!blueprint create CODE`)."""
    try:
        data = YAML(typ="safe").load(text)
    except YAMLError as e:
        raise BlueprintError(strings.BLUEPRINT_BAD_YAML.format(error=e)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BlueprintError(strings.BLUEPRINT_NOT_A_MAPPING)
    return data


def _invalid(code: str, problems: list[tuple[str, str]]) -> BlueprintError:
    lines = "\n".join(strings.BLUEPRINT_PROBLEM.format(field=f, problem=p) for f, p in problems)
    return BlueprintError(
        strings.BLUEPRINT_INVALID.format(code=code, problems=lines), [f for f, _ in problems]
    )


def check_spec(data: Mapping[str, Any]) -> BlueprintSpec:
    """Types and ranges of a spec as written. Raises BlueprintError naming each bad field."""
    try:
        return BlueprintSpec.model_validate(dict(data))
    except ValidationError as e:
        problems = []
        for error in e.errors():
            field = ".".join(str(p) for p in error["loc"]) or "(blueprint)"
            message = {
                "missing": "missing",
                "extra_forbidden": strings.BLUEPRINT_UNKNOWN_KEY,
            }.get(error["type"], error["msg"])
            if error["type"] == "string_pattern_mismatch":
                message = strings.BLUEPRINT_BAD_CODE
            problems.append((field, message))
        code = data.get("code") if isinstance(data.get("code"), str) else "?"
        raise _invalid(str(code), problems) from None


def merge(parent: Mapping[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    """The child's keys over the parent's (limits key by key); None values do not count."""
    merged = {k: v for k, v in parent.items() if k not in OWN_KEYS}
    for key, value in child.items():
        if value is None:
            continue
        if key == "limits" and isinstance(merged.get("limits"), Mapping):
            merged["limits"] = {
                **merged["limits"],
                **{k: v for k, v in value.items() if v is not None},
            }
        else:
            merged[key] = value
    return merged


def spec_dict(spec: BlueprintSpec) -> dict[str, Any]:
    """A checked spec as JSON-able data, without unset keys."""
    return spec.model_dump(mode="json", exclude_none=True)


def validate_resolved(
    code: str,
    resolved: Mapping[str, Any],
    *,
    resolve_model: Callable[[str], object],
    known_tools: Collection[str],
    letta_enabled: bool = False,
) -> None:
    """What only the whole (merged) blueprint can tell: instructions present, models resolve in
    the router, tools exist, a Letta backend has a Letta server. Raises BlueprintError naming
    each bad field."""
    problems: list[tuple[str, str]] = []
    if resolved.get("backend") == "letta" and not letta_enabled:
        problems.append(("backend", strings.BLUEPRINT_NO_LETTA))
    if not str(resolved.get("instructions") or "").strip():
        problems.append(("instructions", strings.BLUEPRINT_NO_INSTRUCTIONS))
    refs = [("model", resolved.get("model") or "")]
    refs += [(f"fallbacks.{i}", ref) for i, ref in enumerate(resolved.get("fallbacks") or [])]
    for field, ref in refs:
        if field == "model" and not ref:
            continue  # the default model
        try:
            resolve_model(ref)
        except UserError as e:
            problems.append((field, str(e)))
    tools = list(resolved.get("tools") or [])
    unknown = [t for t in tools if t not in known_tools]
    if unknown:
        problems.append(
            (
                "tools",
                strings.BLUEPRINT_UNKNOWN_TOOLS.format(
                    tools=", ".join(f"`{t}`" for t in unknown),
                    known=", ".join(sorted(known_tools)) or "none",
                ),
            )
        )
    duplicates = sorted({t for t in tools if tools.count(t) > 1})
    if duplicates:
        problems.append(
            ("tools", strings.BLUEPRINT_DUPLICATE_TOOLS.format(tools=", ".join(duplicates)))
        )
    if problems:
        raise _invalid(code, problems)


def build(row: Mapping[str, Any], *, current: bool) -> Blueprint:
    """A Blueprint from a blueprint_versions row (spec, resolved, ...)."""
    resolved = row["resolved"]
    limits = resolved.get("limits") or {}
    budget = limits.get("monthly_budget_usd")
    fallbacks = resolved.get("fallbacks")
    return Blueprint(
        code=row["code"],
        version=row["version"],
        name=resolved.get("name") or row["code"],
        description=resolved.get("description") or "",
        model=resolved.get("model") or "",
        fallbacks=tuple(fallbacks) if fallbacks is not None else None,
        instructions=resolved.get("instructions") or "",
        tools=tuple(resolved.get("tools") or ()),
        temperature=resolved.get("temperature"),
        max_tokens=resolved.get("max_tokens"),
        limits=BlueprintLimits(
            requests_per_minute=limits.get("requests_per_minute"),
            tokens_per_minute=limits.get("tokens_per_minute"),
            monthly_budget_usd=Decimal(str(budget)) if budget is not None else None,
        ),
        backend="letta" if resolved.get("backend") == "letta" else "native",
        extends=row["extends"],
        extends_version=row["extends_version"],
        spec=row["spec"],
        source=row["source"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        current=current,
    )
