"""The pure parts of the Composio integration: recipe shaping, result reading, schemas to
argument models, the config section and the workspace setting."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from bot.composio.client import ToolSchema, brief
from bot.composio.recipes import (
    BudgetArgs,
    GithubTemplateArgs,
    ItineraryArgs,
    budget_rows,
    budget_total,
    is_not_found,
    itinerary_blocks,
    notion_page_id,
    notion_title,
    plan_days,
    recipe_tools,
    split_template,
)
from bot.composio.tools import args_model, find_value, links_in, runner_of, tool_from_schema
from bot.core.config import config_from_overrides
from bot.core.errors import ConfigError, UserError
from bot.tools.registry import Tool, ToolCall, ToolResult
from bot.workspaces.settings import WorkspaceSettings, describe, updated
from bot.workspaces.store import Workspace

TOKENS = {"appservice": {"as_token": "a", "hs_token": "b"}}


@pytest.mark.parametrize(
    ("days", "cities", "plan"),
    [
        (1, ["Rome"], [["Rome"]]),
        (3, ["Rome"], [["Rome"], ["Rome"], ["Rome"]]),
        (4, ["Lisbon", "Porto"], [["Lisbon"], ["Lisbon"], ["Porto"], ["Porto"]]),
        (5, ["A", "B"], [["A"], ["A"], ["A"], ["B"], ["B"]]),
        (3, ["A", "B", "C"], [["A"], ["B"], ["C"]]),
        (2, ["A", "B", "C"], [["A", "B"], ["C"]]),
        (1, ["A", "B", "C"], [["A", "B", "C"]]),
    ],
)
def test_plan_days(days: int, cities: list[str], plan: list[list[str]]) -> None:
    assert plan_days(days, cities) == plan


def test_itinerary_blocks() -> None:
    blocks = itinerary_blocks(3, ["Lisbon", "Porto"], "no museums")
    kinds = [b["block_property"] for b in blocks]
    assert kinds[:3] == ["paragraph", "callout", "heading_2"]
    assert blocks[0]["content"] == "3-day trip: Lisbon → Porto"
    assert blocks[1]["content"] == "Preferences: no museums"
    headings = [b["content"] for b in blocks if b["block_property"] == "heading_2"]
    assert headings == ["Day 1 — Lisbon", "Day 2 — Lisbon", "Day 3 — Porto"]
    travel = [b["content"] for b in blocks if b["content"].startswith("Travel")]
    assert travel == ["Travel from Lisbon to Porto"]
    assert kinds.count("to_do") == 9
    assert "callout" not in [b["block_property"] for b in itinerary_blocks(1, ["A"], "")]


def test_itinerary_args() -> None:
    args = ItineraryArgs.model_validate({"trip_name": " Japan ", "days": "5", "cities": "Tokyo,"})
    assert (args.trip_name, args.days, args.cities, args.prefs) == ("Japan", 5, ["Tokyo"], "")
    for bad in ({"days": 0}, {"days": 61}, {"cities": []}, {"cities": ""}, {"extra": 1}):
        with pytest.raises(ValidationError):
            ItineraryArgs.model_validate({"trip_name": "T", "days": 2, "cities": ["A"], **bad})


def test_notion_title_and_page_id() -> None:
    page = {
        "properties": {
            "Name": {"type": "title", "title": [{"plain_text": "Ja"}, {"plain_text": "pan"}]}
        }
    }
    assert notion_title(page) == "Japan"
    assert notion_title({"properties": {}}) == "" and notion_title("x") == ""
    bare = "0123456789abcdef0123456789abcdef"
    dashed = "01234567-89ab-cdef-0123-456789abcdef"
    assert notion_page_id(bare) == dashed
    assert notion_page_id(dashed) == dashed
    assert notion_page_id(f"https://www.notion.so/Travel-{bare}?pvs=4") == dashed
    with pytest.raises(UserError, match="not a Notion page"):
        notion_page_id("travel")


def test_budget_items_and_rows() -> None:
    args = BudgetArgs.model_validate(
        {
            "sheet_name": "Trip",
            "items": [
                "Flights: 1,200",
                "Hotel = $80.50 (lodging)",
                {"name": "Food", "amount": 99.99, "category": "meals"},
            ],
        }
    )
    assert [(i.name, i.amount, i.category) for i in args.items] == [
        ("Flights", Decimal("1200"), ""),
        ("Hotel", Decimal("80.50"), "lodging"),
        ("Food", Decimal("99.99"), "meals"),
    ]
    assert budget_total(args.items) == Decimal("1380.49")
    assert budget_rows(args.items) == [
        ["Item", "Category", "Amount"],
        ["Flights", "", 1200.0],
        ["Hotel", "lodging", 80.5],
        ["Food", "meals", 99.99],
        ["Total", "", "=SUM(C2:C4)"],
    ]
    one = BudgetArgs.model_validate({"sheet_name": "S", "items": "Rent: 900"})
    assert [i.name for i in one.items] == ["Rent"]
    for bad in ("Rent", "Rent: lots", "Rent: 1.234"):
        with pytest.raises(ValidationError):
            BudgetArgs.model_validate({"sheet_name": "S", "items": [bad]})
    with pytest.raises(ValidationError):
        BudgetArgs.model_validate({"sheet_name": "S", "items": []})


def test_github_template_args() -> None:
    args = GithubTemplateArgs.model_validate({"repo_name": "x", "template": "y"})
    assert (args.private, args.description) == (True, "")
    assert split_template("y", "alice") == ("alice", "y")
    assert split_template("octo/tmpl", "alice") == ("octo", "tmpl")
    for bad in ({"repo_name": "a b"}, {"template": "a/b/c"}, {"repo_name": ""}):
        with pytest.raises(ValidationError):
            GithubTemplateArgs.model_validate({"repo_name": "x", "template": "y", **bad})


def test_not_found_and_reading_results() -> None:
    assert is_not_found("404 Client Error: Not Found for url")
    assert is_not_found("Could not find: Not found")
    assert not is_not_found("500 Server Error") and not is_not_found(None)
    data: dict[str, Any] = {"details": {"repo": {"html_url": "https://github.com/a/b", "id": 0}}}
    assert find_value(data, "html_url") == "https://github.com/a/b"
    assert find_value({"results": [{"x": 1}, {"id": "p2"}]}, "id") == "p2"
    assert find_value({"a": None}, "a") is None and find_value("text", "a") is None
    assert links_in({"webViewLink": "https://docs.google.com/x", "n": 1}) == [
        "https://docs.google.com/x"
    ]
    assert brief("a\n  b " + "c" * 400, 10) == "a b ccccc…"


def test_links_prefer_pages_for_people() -> None:
    repo = {
        "url": "https://api.github.com/repos/a/b",
        "html_url": "https://github.com/a/b",
        "clone_url": "not a link",
        "owner": {"avatar_url": "https://avatars.example/1"},
    }
    assert links_in(repo) == ["https://github.com/a/b", "https://api.github.com/repos/a/b"]
    assert links_in({"items": [{"url": f"https://x.example/{n}"} for n in range(9)]}, 3) == [
        "https://x.example/0",
        "https://x.example/1",
        "https://x.example/2",
    ]


ISSUE = ToolSchema(
    slug="GITHUB_CREATE_AN_ISSUE",
    name="Create an issue",
    description="Create an issue in a repository.",
    toolkit="github",
    version="20251027_00",
    input_parameters={
        "type": "object",
        "properties": {
            "owner": {"type": "string", "description": "Owner"},
            "repo": {"type": "string"},
            "title": {"type": "string"},
            "labels": {"type": "array", "items": {"type": "string"}, "default": None},
            "from": {"type": "string", "description": "a Python keyword as a name"},
        },
        "required": ["owner", "repo", "title"],
    },
)


def test_args_model_from_a_composio_schema() -> None:
    model = args_model(ISSUE)
    args = model.model_validate({"owner": "o", "repo": "r", "title": "t", "labels": ["bug"]})
    assert args.model_dump(mode="json", by_alias=True, exclude_unset=True) == {
        "owner": "o",
        "repo": "r",
        "title": "t",
        "labels": ["bug"],
    }
    with pytest.raises(ValidationError, match="extra"):
        model.model_validate({"owner": "o", "repo": "r", "title": "t", "colour": "red"})
    with pytest.raises(ValidationError, match="title"):
        model.model_validate({"owner": "o", "repo": "r"})
    aliased = model.model_validate({"owner": "o", "repo": "r", "title": "t", "from": "x"})
    assert aliased.model_dump(by_alias=True, exclude_unset=True)["from"] == "x"


def test_tool_from_a_composio_schema() -> None:
    tool = tool_from_schema(ISSUE, "20251101_00")
    assert (tool.name, tool.version, tool.executor, tool.writes, tool.idempotent) == (
        "GITHUB_CREATE_AN_ISSUE",
        "20251101_00",
        "composio",
        True,
        False,
    )
    assert tool.description.endswith("(Composio, github)") and tool.precheck is not None
    with pytest.raises(UserError, match="are not right"):
        tool.validate({"owner": "o"})
    broken = ToolSchema(
        "X_Y", "", "", "x", "1", {"type": "object", "properties": {"a": {"$ref": "#/nope"}}}
    )
    with pytest.raises(UserError, match="cannot be read"):
        args_model(broken)


def test_recipes_are_composio_tools() -> None:
    tools = {t.name: t for t in recipe_tools()}
    assert set(tools) == {
        "create_github_template",
        "create_notion_itinerary",
        "create_budget_sheet",
    }
    for tool in tools.values():
        assert tool.executor == "composio" and tool.writes and tool.idempotent
        assert tool.precheck is not None
        assert "additionalProperties" in tool.schema()["function"]["parameters"]


def _workspace(account: str) -> Workspace:
    settings = WorkspaceSettings.model_validate({"composio_account": account})
    return Workspace("ws_1", "!space:hs", "Rocket", "@host:hs", True, settings)


def test_whose_account_runs() -> None:
    assert runner_of(_workspace("host"), "@bob:hs") == "@host:hs"
    assert runner_of(_workspace("requester"), "@bob:hs") == "@bob:hs"
    assert WorkspaceSettings().composio_account == "host"
    changed = updated(WorkspaceSettings(), "composio_account", " Requester ")
    assert changed.composio_account == "requester"
    assert ("composio_account", "requester") in [(k, v) for k, v, _ in describe(changed)]
    with pytest.raises(UserError, match="not a valid composio_account"):
        updated(WorkspaceSettings(), "composio_account", "everyone")


async def test_tool_check_runs_the_precheck() -> None:
    seen: list[Any] = []

    class Args(BaseModel):
        a: int

    async def run(call: ToolCall, args: Args) -> ToolResult:
        return ToolResult("ran")

    async def precheck(call: ToolCall, args: Args) -> None:
        seen.append(args.a)
        if args.a < 0:
            raise UserError("no")

    call: Any = None  # the precheck here does not look at it
    await Tool("t", "1", "d", Args, run).check(call, Args(a=1))
    checked = Tool("t", "1", "d", Args, run, precheck=precheck)
    await checked.check(call, Args(a=1))
    with pytest.raises(UserError, match="no"):
        await checked.check(call, Args(a=-1))
    assert seen == [1, -1]


def test_composio_config() -> None:
    config = config_from_overrides(TOKENS)
    assert config.composio.api_key.get_secret_value() == ""
    assert (config.composio.auth_configs, config.composio.toolkit_versions) == ({}, {})
    config = config_from_overrides(
        {
            **TOKENS,
            "composio": {
                "api_key": "sk-secret-value",
                "base_url": "http://localhost:9900/",
                "auth_configs": {"GitHub": "ac_1"},
                "toolkit_versions": {"notion": " 20250101_00 "},
            },
        }
    )
    assert config.composio.base_url == "http://localhost:9900"
    assert config.composio.auth_configs == {"github": "ac_1"}
    assert config.composio.toolkit_versions == {"notion": "20250101_00"}
    assert "sk-secret-value" not in repr(config.composio)
    for bad, key in (
        ({"base_url": "http://composio.example.org"}, "composio.base_url"),
        ({"toolkit_versions": {"github": "latest"}}, "composio.toolkit_versions"),
        ({"auth_configs": {"git hub": "ac_1"}}, "composio.auth_configs"),
        ({"timeout": 0}, "composio.timeout"),
        ({"api_key": "key\n"}, "composio.api_key"),
    ):
        with pytest.raises(ConfigError, match=key):
            config_from_overrides({**TOKENS, "composio": bad})
    https = config_from_overrides({**TOKENS, "composio": {"base_url": "https://c.example"}})
    assert https.composio.base_url == "https://c.example"
