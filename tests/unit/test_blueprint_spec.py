"""Blueprint specs as written: YAML parsing, checks that name the field, `extends` merging, and
the router request a blueprint makes."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from bot.blueprints.spec import build, check_spec, merge, parse_yaml, spec_dict, validate_resolved
from bot.core.errors import BlueprintError, UnknownModel
from bot.llm import CallContext, Limits, Message, ToolSchema


def test_parse_yaml() -> None:
    assert parse_yaml("code: x1\ntools: [a, b]\n") == {"code": "x1", "tools": ["a", "b"]}
    assert parse_yaml("") == {}
    with pytest.raises(BlueprintError, match="not valid YAML"):
        parse_yaml("code: [\n")
    with pytest.raises(BlueprintError, match="a YAML mapping"):
        parse_yaml("- a\n- b\n")


def test_check_spec_names_every_bad_field() -> None:
    with pytest.raises(BlueprintError) as caught:
        check_spec({"code": "x1", "temperature": "hot", "tools": "all", "limits": {"rpm": 1}})
    assert sorted(caught.value.fields) == ["limits.rpm", "temperature", "tools"]
    assert str(caught.value).splitlines()[0] == "Blueprint `x1` is not valid:"
    assert "- `limits.rpm`: unknown key" in str(caught.value)


def test_spec_dict_drops_unset_keys() -> None:
    spec = check_spec({"code": "x1", "name": "X", "limits": {"monthly_budget_usd": 2.5}})
    assert spec_dict(spec) == {"code": "x1", "name": "X", "limits": {"monthly_budget_usd": "2.5"}}


def test_merge_overrides_keys_and_merges_limits() -> None:
    parent = {
        "code": "p",
        "extends": "gp",
        "name": "P",
        "tools": ["a", "b"],
        "limits": {"requests_per_minute": 5, "tokens_per_minute": 10},
    }
    child = {"code": "c", "extends": "p", "tools": ["c"], "limits": {"tokens_per_minute": 20}}
    merged = merge(merge({}, parent), child)
    assert merged == {
        "code": "c",
        "extends": "p",
        "name": "P",
        "tools": ["c"],
        "limits": {"requests_per_minute": 5, "tokens_per_minute": 20},
    }


def resolve(ref: str) -> object:
    if not ref.startswith("local/"):
        raise UnknownModel(f"There is no model `{ref}`.")
    return ref


def test_validate_resolved_collects_problems() -> None:
    with pytest.raises(BlueprintError) as caught:
        validate_resolved(
            "x1",
            {"model": "cloud/x", "fallbacks": ["local/a", "z"], "tools": ["a", "nope"]},
            resolve_model=resolve,
            known_tools={"a"},
        )
    assert caught.value.fields == ["instructions", "model", "fallbacks.1", "tools"]
    assert "- `tools`: unknown tool `nope` (known: a)" in str(caught.value)


def test_a_blueprint_makes_its_router_request() -> None:
    blueprint = build(
        {
            "code": "planner",
            "version": 4,
            "resolved": {
                "name": "Planner",
                "instructions": "Plan.",
                "model": "smart",
                "tools": ["create_task"],
                "temperature": 0.2,
                "max_tokens": 900,
                "limits": {"requests_per_minute": 7, "monthly_budget_usd": "3"},
            },
            "spec": {"code": "planner"},
            "extends": None,
            "extends_version": None,
            "source": "command",
            "created_by": None,
            "created_at": datetime.now(UTC),
        },
        current=True,
    )
    assert blueprint.limits.monthly_budget_usd == Decimal(3) and blueprint.ref == "planner@4"
    request = blueprint.request(
        [Message.user("plan the offsite")],
        context=CallContext(agent="someone-else", workspace_id="ws", user_id="@u:hs"),
        tools=[ToolSchema("create_task", "t"), ToolSchema("send_notification", "n")],
        limits=Limits(agent_requests_per_minute=2, workspace_monthly_usd=Decimal(50)),
    )
    assert request.messages[0] == Message.system("Plan.")
    assert (request.model, request.fallbacks, request.temperature) == ("smart", None, 0.2)
    assert [t.name for t in request.tools] == ["create_task"]
    assert (request.context.agent, request.context.blueprint_version) == ("planner", 4)
    assert request.limits is not None
    assert request.limits.agent_requests_per_minute == 2  # the workspace's settings win
    assert request.limits.agent_monthly_usd == Decimal(3)
    assert request.limits.workspace_monthly_usd == Decimal(50)
