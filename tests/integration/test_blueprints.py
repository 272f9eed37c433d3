"""Blueprints in the real PostgreSQL through BlueprintStore: templates loaded from YAML, create,
edit (a new version), extends, rollback, and validation errors that name the field."""

from __future__ import annotations

import asyncio
import shutil
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from bot.blueprints import SPEC_TOOLS, BlueprintStore, templates_dir
from bot.core import db
from bot.core.errors import BlueprintError, RateLimited
from bot.llm import CallContext, LLMRouter, Message, ToolSchema
from tests.fakes.llm_script import Answer
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.llm_fixtures import *  # noqa: F403
from tests.integration.llm_fixtures import RouterFactory

BASE = {
    "code": "helper",
    "name": "Helper",
    "instructions": "Help.",
    "tools": ["search_docs"],
    "temperature": 0.5,
}


@pytest.fixture
def router(make_router: RouterFactory) -> LLMRouter:
    return make_router(aliases={"smart": "claude/claude-haiku-4-5"})


@pytest.fixture
def store(llm_pool: asyncpg.Pool, router: LLMRouter) -> BlueprintStore:
    return BlueprintStore(
        llm_pool, resolve_model=router.catalog.resolve, known_tools=lambda: SPEC_TOOLS
    )


async def test_the_shipped_templates_load_once(store: BlueprintStore) -> None:
    report = await store.load_directory(templates_dir())
    assert sorted(report.created) == ["assistant", "planner", "researcher"]
    assert report.created.index("assistant") < report.created.index("planner")  # parent first
    blueprints = {b.code: b for b in await store.list()}
    assert set(blueprints) == {"assistant", "planner", "researcher"}
    planner = blueprints["planner"]
    assert planner.version == 1 and planner.current and planner.source == "file"
    assert planner.extends == "assistant" and planner.extends_version == 1
    assert planner.model == "" and "create_task" in planner.tools and planner.temperature == 0.2
    researcher = blueprints["researcher"]
    assert researcher.limits.requests_per_minute == 60
    assert researcher.max_tokens == 2000 and researcher.instructions.startswith("You are Doryo's")
    again = await store.load_directory(templates_dir())
    assert again.created == () and again.updated == ()
    assert sorted(again.unchanged) == ["assistant", "planner", "researcher"]


async def test_two_processes_loading_at_once_load_each_template_once(
    llm_pool: asyncpg.Pool, router: LLMRouter, database_url: str
) -> None:
    other_pool = await db.connect(database_url, min_size=1, max_size=2)
    try:
        stores = [
            BlueprintStore(pool, resolve_model=router.catalog.resolve, known_tools=SPEC_TOOLS)
            for pool in (llm_pool, other_pool)
        ]
        reports = await asyncio.gather(*(s.load_directory(templates_dir()) for s in stores))
        assert sorted(reports[0].created + reports[1].created) == [
            "assistant",
            "planner",
            "researcher",
        ]
        assert [v.version for v in await stores[0].history("planner")] == [1]
    finally:
        await other_pool.close()


async def test_a_changed_file_is_a_new_version_and_edits_survive_unchanged_files(
    store: BlueprintStore, tmp_path: Path
) -> None:
    directory = tmp_path / "blueprints"
    shutil.copytree(templates_dir(), directory)
    await store.load_directory(directory)
    edited = await store.edit("planner", {"temperature": 0.6}, by="@host:hs")
    assert (edited.version, edited.temperature, edited.source) == (2, 0.6, "command")
    await store.load_directory(directory)  # files unchanged: the edit stays
    assert (await store.get("planner")).temperature == 0.6
    path = directory / "assistant.yaml"
    path.write_text(path.read_text().replace("temperature: 0.3", "temperature: 0.4"))
    report = await store.load_directory(directory)
    assert report.updated == ("assistant",)
    assistant = await store.get("assistant")
    assert (assistant.version, assistant.temperature, assistant.source) == (2, 0.4, "file")


async def test_create_edit_history_and_rollback(store: BlueprintStore) -> None:
    first = await store.create(BASE, by="@admin:hs")
    assert (first.code, first.version, first.name, first.current) == ("helper", 1, "Helper", True)
    assert first.created_by == "@admin:hs" and first.fallbacks is None and first.model == ""
    second = await store.edit(
        "helper", {"model": "smart", "tools": ["search_docs", "create_task"]}
    )
    assert second.version == 2 and second.model == "smart" and second.temperature == 0.5
    third = await store.edit("helper", {"temperature": None, "fallbacks": ["local/llama3.1"]})
    assert third.version == 3 and third.temperature is None
    assert third.fallbacks == ("local/llama3.1",)

    old = await store.get("helper", 1)
    assert old.version == 1 and not old.current and old.tools == ("search_docs",)
    assert [v.version for v in await store.history("helper")] == [3, 2, 1]

    rolled = await store.rollback("helper", 1, by="@host:hs")
    assert rolled.version == 1 and rolled.current
    assert (await store.get("helper")).version == 1
    history = await store.history("helper")
    assert [(v.version, v.current) for v in history] == [(3, False), (2, False), (1, True)]
    # Versions are immutable: version 3 is still there as written.
    assert (await store.get("helper", 3)).fallbacks == ("local/llama3.1",)

    # The next edit builds on what is current (version 1), as version 4.
    fourth = await store.edit("helper", {"name": "Helper Two"})
    assert fourth.version == 4 and fourth.tools == ("search_docs",) and fourth.temperature == 0.5
    pins = await store.pins("helper")
    assert [(p.version, p.action) for p in pins] == [
        (4, "edit"),
        (1, "rollback"),
        (3, "edit"),
        (2, "edit"),
        (1, "create"),
    ]
    assert pins[1].pinned_by == "@host:hs"


async def test_an_edit_that_changes_nothing_makes_no_version(store: BlueprintStore) -> None:
    await store.create(BASE)
    same = await store.edit("helper", {"temperature": 0.5})
    assert same.version == 1


async def test_extends_is_resolved_when_a_version_is_written(store: BlueprintStore) -> None:
    await store.create(
        {**BASE, "code": "base", "limits": {"requests_per_minute": 5, "tokens_per_minute": 1000}}
    )
    child = await store.create(
        {
            "code": "child",
            "extends": "base",
            "instructions": "Child rules.",
            "limits": {"tokens_per_minute": 2000, "monthly_budget_usd": 3},
        }
    )
    assert child.name == "Helper" and child.tools == ("search_docs",)  # from the parent
    assert child.instructions == "Child rules."
    assert (child.limits.requests_per_minute, child.limits.tokens_per_minute) == (5, 2000)
    assert child.limits.monthly_budget_usd == Decimal(3)
    assert (child.extends, child.extends_version) == ("base", 1)
    assert dict(child.spec) == {
        "code": "child",
        "extends": "base",
        "instructions": "Child rules.",
        "limits": {"tokens_per_minute": 2000, "monthly_budget_usd": "3"},
    }

    await store.edit("base", {"temperature": 1.5})
    assert (await store.get("child")).temperature == 0.5  # written against base v1
    refreshed = await store.edit("child", {"name": "Child"})
    assert refreshed.temperature == 1.5 and refreshed.extends_version == 2


async def test_extends_cycles_and_missing_parents_are_refused(
    store: BlueprintStore, tmp_path: Path
) -> None:
    await store.create({**BASE, "code": "aa"})
    await store.create({"code": "bb", "extends": "aa"})
    with pytest.raises(BlueprintError) as caught:
        await store.edit("aa", {"extends": "bb"})
    assert str(caught.value) == (
        "Blueprint `aa` is not valid:\n- `extends`: extends itself: aa → bb → aa"
    )
    assert caught.value.fields == ["extends"]
    assert (await store.get("aa")).version == 1  # nothing written
    with pytest.raises(BlueprintError, match="extends itself: cc → cc"):
        await store.create({**BASE, "code": "cc", "extends": "cc"})
    with pytest.raises(BlueprintError, match="there is no blueprint `nope` to extend"):
        await store.create({**BASE, "code": "dd", "extends": "nope"})

    (tmp_path / "x.yaml").write_text("code: xx\nextends: yy\n")
    (tmp_path / "y.yaml").write_text("code: yy\nextends: xx\ninstructions: hi\n")
    with pytest.raises(BlueprintError, match=r"extends itself: (xx → yy → xx|yy → xx → yy)"):
        await store.load_directory(tmp_path)


@pytest.mark.parametrize(
    ("changes", "problems"),
    [
        (
            {"tools": ["search_docs", "launch_rockets", "fly"]},
            ["- `tools`: unknown tool `launch_rockets`, `fly` (known: create_budget_sheet, "],
        ),
        (
            {"model": "openai/gpt-4o"},
            ["- `model`: There is no model `openai/gpt-4o`. Name one as `provider/model`"],
        ),
        ({"fallbacks": ["local/x", "nope"]}, ["- `fallbacks.1`: There is no model `nope`"]),
        ({"temperature": 3}, ["- `temperature`: Input should be less than or equal to 2"]),
        (
            {"limits": {"requests_per_minute": -1, "monthly_budget_usd": 10**9}},
            [
                "- `limits.requests_per_minute`: Input should be greater than or equal to 0",
                "- `limits.monthly_budget_usd`: Input should be less than or equal to 1000000",
            ],
        ),
        ({"max_tokens": 0}, ["- `max_tokens`: Input should be greater than or equal to 1"]),
        ({"instructions": "  "}, ["- `instructions`: missing (here or in the blueprint it"]),
        ({"colour": "blue"}, ["- `colour`: unknown key"]),
        ({"tools": ["search_docs", "search_docs"]}, ["- `tools`: listed twice: search_docs"]),
    ],
)
async def test_validation_errors_name_the_field(
    store: BlueprintStore, changes: dict[str, object], problems: list[str]
) -> None:
    await store.create(BASE)
    with pytest.raises(BlueprintError) as caught:
        await store.edit("helper", changes)
    message = str(caught.value)
    assert message.startswith("Blueprint `helper` is not valid:\n"), message
    for problem in problems:
        assert problem in message, message
    assert [v.version for v in await store.history("helper")] == [1]


async def test_create_refuses_bad_codes_and_existing_ones(store: BlueprintStore) -> None:
    with pytest.raises(BlueprintError, match=r"- `code`: must be 2 to 32 of a-z"):
        await store.create({**BASE, "code": "Bad Code"})
    with pytest.raises(BlueprintError, match=r"- `code`: missing"):
        await store.create({"name": "x"})
    await store.create(BASE)
    with pytest.raises(BlueprintError, match="A blueprint `helper` exists already"):
        await store.create(BASE)
    with pytest.raises(BlueprintError, match="keeps its code"):
        await store.edit("helper", {"code": "other"})


async def test_missing_blueprints_and_versions(store: BlueprintStore) -> None:
    with pytest.raises(BlueprintError, match="There is no blueprint `ghost`"):
        await store.get("ghost")
    with pytest.raises(BlueprintError, match="There is no blueprint `ghost`"):
        await store.edit("ghost", {"name": "x"})
    await store.create(BASE)
    with pytest.raises(BlueprintError, match=r"has no version 7 \(it has 1 to 1\)"):
        await store.get("helper", 7)
    with pytest.raises(BlueprintError, match=r"has no version 7"):
        await store.rollback("helper", 7)


async def test_a_blueprint_answers_through_the_router(
    store: BlueprintStore,
    router: LLMRouter,
    fake_openai: FakeOpenAI,
    llm_pool: asyncpg.Pool,
) -> None:
    blueprint = await store.create(
        {**BASE, "model": "local/qwen2.5", "max_tokens": 99, "limits": {"requests_per_minute": 1}}
    )
    tools = [ToolSchema("search_docs", "Search"), ToolSchema("create_task", "Create a task")]
    request = blueprint.request(
        [Message.user("hi")],
        context=CallContext(workspace_id="ws1", room_id="!r:hs", user_id="@u:hs"),
        tools=tools,
    )
    fake_openai.script(Answer("hello"))
    result = await router.chat(request)
    assert result.model == "local/qwen2.5"
    body = fake_openai.last.body
    assert body["messages"][0] == {"role": "system", "content": "Help."}
    assert [t["function"]["name"] for t in body["tools"]] == ["search_docs"]  # only its tools
    assert (body["temperature"], body["max_tokens"]) == (0.5, 99)
    await router.flush()
    row = await llm_pool.fetchrow("SELECT agent, blueprint_version FROM llm_usage")
    assert (row["agent"], row["blueprint_version"]) == ("helper", 1)
    with pytest.raises(RateLimited, match="This agent's limit of 1 requests"):
        await router.chat(request)
