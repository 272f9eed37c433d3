"""Composio end to end: the real Synapse, PostgreSQL and Redis, the official composio SDK
unchanged, and a fake Composio on 127.0.0.1 (tests/fakes/composio_server.py) in place of the cloud.

People link accounts with !connect (the link comes in a DM), list them with !connections and
unlink them with !disconnect; the recipes and any Composio tool run after the host's ✅, once,
with the account the workspace setting `composio_account` names.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bot.actions.card import ACTION_KEY
from bot.app import Doryo
from bot.composio.client import ComposioClient
from bot.composio.recipes import PINNED_VERSIONS
from bot.composio.tools import composio_tools
from bot.core.config import ComposioConfig, Config
from bot.core.errors import ExternalToolUnavailable, UserError
from bot.memory import LocalEmbedder
from bot.tools.registry import ToolCall
from tests.client import MatrixClient, replies_to
from tests.conftest import Homeserver, running_bot
from tests.fakes.composio_server import FakeComposio
from tests.integration.agent_helpers import latest
from tests.integration.test_actions import (
    in_thread,
    propose,
    react,
    wait_status,
)
from tests.integration.test_actions import team_with_member as _team_with_member
from tests.integration.workspace_helpers import Team, command, dm_with_bot, new_team

TEMPLATE_TOOL = "GITHUB_CREATE_A_REPOSITORY_USING_A_TEMPLATE"


@pytest.fixture
async def composio() -> AsyncIterator[FakeComposio]:
    async with FakeComposio() as fake:
        yield fake


@pytest.fixture
async def bot(
    bot_config: Callable[..., Config], composio: FakeComposio, local_embedder: LocalEmbedder
) -> AsyncIterator[Doryo]:
    """The bot with Composio on, pointed at the fake (this module's `bot`)."""
    section = composio.config(
        github="ac_github", notion="ac_notion", googlesheets="ac_googlesheets"
    )
    async with running_bot(bot_config(composio=section), local_embedder) as doryo:
        yield doryo


async def team_with_member(homeserver: Homeserver, bot: Doryo) -> tuple[Team, str, MatrixClient]:
    """A workspace whose agent is the planner: the blueprint that lists the Composio recipes."""
    team, session, bob = await _team_with_member(homeserver, bot)
    await command(team.alice, team.dm, "!ws settings agent planner")
    return team, session, bob


async def told_on_proposal(
    bot: Doryo, team: Team, person: MatrixClient, room: str, text: str
) -> str:
    """Propose an action that cannot run; return what the room is told, and check nothing ran.

    With the account checked at proposal (Tool.precheck), the answer is a notice and no card;
    without that check in the @act flow, the card is posted and its run, once the host
    confirms, fails with the same sentence. Either way nothing reaches the tool.
    """
    event_id = await person.send_text(room, text)
    [answer] = await person.wait_for(room, lambda e: replies_to(e) == event_id)
    if ACTION_KEY not in answer["content"]:
        return str(answer["content"]["body"])
    await react(team.alice, room, answer["event_id"], "✅")
    await wait_status(person, room, answer, "error")
    return str(latest(person, room, answer)["body"])


def call_for(bot: Doryo, workspace: Any, room: str, requested_by: str, key: str = "") -> ToolCall:
    return ToolCall(
        ctx=bot.ctx,
        workspace=workspace,
        room_id=room,
        requested_by=requested_by,
        confirmed_by=workspace.host if key else None,
        idempotency_key=key,
    )


# Linking accounts ------------------------------------------------------------------------------


async def test_connect_sends_the_link_in_a_dm(
    homeserver: Homeserver, bot: Doryo, composio: FakeComposio
) -> None:
    team, session, bob = await team_with_member(homeserver, bot)
    answer = await command(team.alice, session, "!connect GitHub")
    assert "direct chat" in answer
    [link] = await team.alice.wait_for(
        team.dm, lambda e: "connect.composio.example" in e.get("content", {}).get("body", "")
    )
    [request] = composio.links
    assert request["user_id"] == team.alice.user_id and request["auth_config_id"] == "ac_github"
    assert f"lt_{composio.of_user(team.alice.user_id)[0].id}" in link["content"]["body"]
    assert link["sender"] == bot.config.bot_user_id

    # In the DM itself, the link is the answer.
    in_dm = await command(team.alice, team.dm, "!connect notion")
    assert "https://connect.composio.example/link/" in in_dm and "**notion**" in in_dm
    # Only the toolkits an auth config is set up for; a linked one is not linked twice.
    assert "Toolkits: `github`, `googlesheets`, `notion`" in await command(
        team.alice, session, "!connect slack"
    )
    composio.complete(composio.of_user(team.alice.user_id)[0].id)
    assert "linked already" in await command(team.alice, session, "!connect github")
    assert "Usage: `!connect TOOLKIT`" in await command(bob, session, "!connect")

    # Someone in no workspace links nothing.
    stranger = await homeserver.user("stranger")
    dm = await dm_with_bot(stranger, bot)
    assert "for workspace members" in await command(stranger, dm, "!connect github")
    assert len(composio.links) == 2


async def test_connections_and_disconnect(
    homeserver: Homeserver, bot: Doryo, composio: FakeComposio
) -> None:
    team, session, bob = await team_with_member(homeserver, bot)
    assert "no linked accounts" in await command(team.alice, session, "!connections")
    github = composio.connect(team.alice.user_id, "github")
    notion = composio.connect(team.alice.user_id, "notion")
    bobs = composio.connect(bob.user_id, "github")
    listing = await command(team.alice, session, "!connections")
    assert f"`{github.id}` — github, active" in listing and f"`{notion.id}` — notion" in listing
    assert bobs.id not in listing

    # Only one's own accounts can be unlinked.
    assert "no linked account" in await command(team.alice, session, f"!disconnect {bobs.id}")
    assert composio.deleted == []
    answer = await command(team.alice, session, f"!disconnect {github.id}")
    assert f"Unlinked your github account `{github.id}`" in answer
    assert composio.deleted == [github.id]
    listing = await command(team.alice, session, "!connections")
    assert github.id not in listing and notion.id in listing


async def test_commands_say_when_composio_is_off(
    homeserver: Homeserver, bot_config: Callable[..., Config], local_embedder: LocalEmbedder
) -> None:
    async with running_bot(bot_config(), local_embedder) as plain:
        team = await new_team(homeserver, plain)
        for text in ("!connect github", "!connections", "!disconnect ca_1"):
            assert "Composio is not set up" in await command(team.alice, team.dm, text)
        assert plain.ctx.composio is None
        assert plain.ctx.tools.get("create_github_template") is None


# Recipes and accounts --------------------------------------------------------------------------


async def test_github_recipe_needs_the_hosts_account_then_runs_once_with_it(
    homeserver: Homeserver, bot: Doryo, composio: FakeComposio
) -> None:
    team, session, bob = await team_with_member(homeserver, bot)
    text = "@act create_github_template repo_name=rocket-api template=service-template"

    told = await told_on_proposal(bot, team, bob, session, text)
    assert f"{team.alice.user_id} must link a github account" in told
    assert "`!connect github`" in told and "the host's account" in told
    assert composio.executions == []

    alices = composio.connect(team.alice.user_id, "github")
    composio.connect(bob.user_id, "github")  # the requester's is not the one that runs
    card = await propose(bob, session, text)
    assert card["content"][ACTION_KEY]["tool"] == "create_github_template"
    await react(team.alice, session, card["event_id"], "✅")
    await wait_status(bob, session, card, "done")
    await react(team.alice, session, card["event_id"], "👍")  # a late ✅ runs nothing
    [result] = await bob.wait_for(
        session,
        lambda e: (
            "github.com" in e.get("content", {}).get("body", "")
            and e in in_thread(bob, session, card["event_id"])
        ),
    )
    login = team.alice.user_id.lstrip("@").split(":")[0].replace("_", "-")
    url = f"https://github.com/{login}/rocket-api"
    assert (
        url in result["content"]["body"]
        and "Created the GitHub repository" in (result["content"]["body"])
    )

    await bot.idle(20)
    [made] = composio.executions_of(TEMPLATE_TOOL)
    assert made.connected_account_id == alices.id and made.user_id == team.alice.user_id
    assert made.version == PINNED_VERSIONS["github"]
    assert made.arguments["template_owner"] == login
    assert made.arguments["template_repo"] == "service-template"
    assert made.arguments["name"] == "rocket-api" and made.arguments["private"] is True
    # It looked before it made: who the account is, and whether the repository exists.
    assert [e.slug for e in composio.executions] == [
        "GITHUB_GET_THE_AUTHENTICATED_USER",
        "GITHUB_GET_A_REPOSITORY",
        TEMPLATE_TOOL,
    ]
    assert {e.connected_account_id for e in composio.executions} == {alices.id}
    block = latest(bob, session, card)[ACTION_KEY]
    assert block["result"]["url"] == url and block["result"]["account"] == alices.id
    runs = await bot.ctx.db.fetch("SELECT external_ids FROM tool_runs WHERE outcome = 'done'")
    assert [r["external_ids"] for r in runs] == [[url]]


async def test_the_requester_setting_runs_with_the_requesters_account(
    homeserver: Homeserver, bot: Doryo, composio: FakeComposio
) -> None:
    team, session, bob = await team_with_member(homeserver, bot)
    composio.connect(team.alice.user_id, "github")
    assert "`composio_account` = `host`" in await command(team.alice, session, "!ws settings")
    answer = await command(team.alice, session, "!ws settings composio_account Requester")
    assert "`composio_account` = `requester`" in answer

    text = "@act create_github_template repo_name=bobs-repo template=octo/template"
    told = await told_on_proposal(bot, team, bob, session, text)
    assert f"{bob.user_id} must link a github account" in told and "the requester's" in told
    assert composio.executions == []

    bobs = composio.connect(bob.user_id, "github")
    card = await propose(bob, session, text)
    await react(team.alice, session, card["event_id"], "✅")
    await wait_status(bob, session, card, "done")
    [made] = composio.executions_of(TEMPLATE_TOOL)
    assert made.connected_account_id == bobs.id and made.user_id == bob.user_id
    assert (made.arguments["template_owner"], made.arguments["template_repo"]) == (
        "octo",
        "template",
    )
    assert "Only the workspace's host" in await command(
        bob, session, "!ws settings composio_account host"
    )


async def test_a_composio_failure_shows_on_the_card(
    homeserver: Homeserver, bot: Doryo, composio: FakeComposio
) -> None:
    team, session, bob = await team_with_member(homeserver, bot)
    composio.connect(team.alice.user_id, "github")
    composio.fail(TEMPLATE_TOOL, "Repository creation failed: could not clone the template")
    card = await propose(bob, session, "@act create_github_template repo_name=x template=y")
    await react(team.alice, session, card["event_id"], "✅")
    await wait_status(bob, session, card, "error")
    body = latest(bob, session, card)["body"]
    assert f"⚠️ **Failed**: `{TEMPLATE_TOOL}` did not succeed" in body
    assert "could not clone the template" in body
    [told] = await bob.wait_for(
        session,
        lambda e: (
            "could not clone" in e.get("content", {}).get("body", "")
            and e in in_thread(bob, session, card["event_id"])
        ),
    )

    # Composio itself down: the card says so, briefly.
    composio.down_for.add("/api/v3.1/tools/execute/")
    second = await propose(bob, session, "@act create_github_template repo_name=z template=y")
    await react(team.alice, session, second["event_id"], "✅")
    await wait_status(bob, session, second, "error")
    assert (
        "Composio is not working right now (503 Service temporarily unavailable): try again later"
        in (latest(bob, session, second)["body"])
    )
    runs = await bot.ctx.db.fetch("SELECT outcome, error FROM tool_runs ORDER BY id")
    assert [r["outcome"] for r in runs] == ["error", "error"]
    assert "could not clone" in runs[0]["error"] and "503" in runs[1]["error"]


async def test_composio_failures_say_whether_to_try_again_and_whether_anything_ran(
    composio: FakeComposio,
) -> None:
    """Through the real SDK: a refusal is final, an outage is worth another try later, and a
    service that cannot even be connected to was sent nothing."""

    async def fails(client: ComposioClient) -> ExternalToolUnavailable:
        with pytest.raises(ExternalToolUnavailable) as raised:
            await client.execute(
                TEMPLATE_TOOL, {}, user_id="@a:hs", account_id="ca_x", version="20251027_00"
            )
        return raised.value

    client = ComposioClient(ComposioConfig(**composio.config()))
    try:
        composio.refuse(TEMPLATE_TOOL, 400, "bad argument")
        refused = await fails(client)
        assert (refused.retryable, refused.reached) == (False, True)
        assert "Composio refused" in str(refused)
        composio.down_for.add("/api/v3.1/tools/execute/")
        down = await fails(client)
        assert (down.retryable, down.reached) == (True, True)
        assert "try again later" in str(down)
    finally:
        await client.close()
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    closed = ComposioClient(
        ComposioConfig(**{**composio.config(), "base_url": f"http://127.0.0.1:{port}"})
    )
    try:
        unreachable = await fails(closed)
        assert (unreachable.retryable, unreachable.reached) == (True, False)
    finally:
        await closed.close()


async def test_precheck_names_who_must_connect(
    homeserver: Homeserver, bot: Doryo, composio: FakeComposio
) -> None:
    team = await new_team(homeserver, bot)
    workspace = await bot.ctx.workspaces.get(team.workspace_id)
    assert workspace is not None
    tool = bot.ctx.tools.get("create_notion_itinerary")
    assert tool is not None and tool.executor == "composio" and tool.precheck is not None
    args = tool.validate({"trip_name": "Porto", "days": "2", "cities": "Porto"})
    call = call_for(bot, workspace, team.dm, "@someone:localhost")
    with pytest.raises(UserError, match=f"{team.alice.user_id} must link a notion account"):
        await tool.check(call, args)
    composio.connect(team.alice.user_id, "notion")
    await tool.check(call, args)
    assert composio.executions == []


async def test_notion_and_sheets_recipes_make_things_once(
    homeserver: Homeserver, bot: Doryo, composio: FakeComposio
) -> None:
    team = await new_team(homeserver, bot)
    workspace = await bot.ctx.workspaces.get(team.workspace_id)
    assert workspace is not None
    notion = composio.connect(team.alice.user_id, "notion")
    sheets = composio.connect(team.alice.user_id, "googlesheets")
    call = call_for(bot, workspace, team.dm, team.alice.user_id, key="k1")

    itinerary = bot.ctx.tools.get("create_notion_itinerary")
    assert itinerary is not None
    raw = {"trip_name": "Portugal 2026", "days": 4, "cities": "Lisbon, Porto", "prefs": "slow"}
    with pytest.raises(UserError, match="shares no page"):
        await itinerary.run(call, itinerary.validate(raw))
    home = composio.world.share_page(notion, "Travel")
    first = await itinerary.run(call, itinerary.validate(raw))
    page = composio.world.pages[first.data["page_id"]]
    assert page["parent"] == home["id"] and first.data["existed"] is False
    headings = [b["content"] for b in page["blocks"] if b["block_property"] == "heading_2"]
    assert headings == ["Day 1 — Lisbon", "Day 2 — Lisbon", "Day 3 — Porto", "Day 4 — Porto"]
    assert first.data["url"] in first.external_ids and first.data["url"] in first.summary
    again = await itinerary.run(call, itinerary.validate(raw))  # e.g. finished after a restart
    assert again.data["existed"] is True and again.data["page_id"] == first.data["page_id"]
    assert len(composio.executions_of("NOTION_CREATE_NOTION_PAGE")) == 1

    budget = bot.ctx.tools.get("create_budget_sheet")
    assert budget is not None
    raw = {"sheet_name": "Trip budget", "items": ["Flights: 1200", "Hotel = 80.50 (lodging)"]}
    made = await budget.run(call, budget.validate(raw))
    sheet = composio.world.sheets[made.data["spreadsheet_id"]]
    assert sheet["values"] == [
        ["Item", "Category", "Amount"],
        ["Flights", "", 1200.0],
        ["Hotel", "lodging", 80.5],
        ["Total", "", "=SUM(C2:C3)"],
    ]
    assert "1280.50 in all" in made.summary and made.data["url"].startswith("https://docs.google")
    again = await budget.run(call, budget.validate(raw))
    assert again.data["existed"] is True
    assert len(composio.executions_of("GOOGLESHEETS_CREATE_GOOGLE_SHEET1")) == 1
    assert {e.connected_account_id for e in composio.executions} == {notion.id, sheets.id}
    assert {e.version for e in composio.executions} == {"20251027_00"}


# Any Composio tool a blueprint allows ----------------------------------------------------------


async def test_a_composio_tool_by_slug(
    homeserver: Homeserver, bot: Doryo, composio: FakeComposio
) -> None:
    [issue] = await composio_tools(bot.ctx, ["github_create_an_issue"])
    assert issue.name == "GITHUB_CREATE_AN_ISSUE" and issue.executor == "composio"
    assert issue.version == "20251027_00" and issue.writes and not issue.idempotent
    parameters = issue.schema()["function"]["parameters"]
    assert set(parameters["required"]) == {"owner", "repo", "title"}
    bot.ctx.tools.register(issue)
    with pytest.raises(UserError, match="Composio has no tool GITHUB_NOPE"):
        await composio_tools(bot.ctx, ["GITHUB_CREATE_AN_ISSUE", "GITHUB_NOPE"])

    team, session, bob = await team_with_member(homeserver, bot)
    # A blueprint allows the Composio tool by its slug.
    await bot.ctx.blueprints.create(
        {
            "code": "issues",
            "name": "Issues",
            "extends": "planner",
            "tools": ["GITHUB_CREATE_AN_ISSUE"],
        },
        by=team.alice.user_id,
    )
    await command(team.alice, team.dm, "!ws settings agent issues")
    extra = await command(bob, session, "@act GITHUB_CREATE_AN_ISSUE owner=o repo=r title=t x=1")
    assert "`x`: not an argument of this tool" in extra
    composio.connect(team.alice.user_id, "github")
    card = await propose(
        bob, session, '@act GITHUB_CREATE_AN_ISSUE owner=acme repo=web title="Fix it"'
    )
    assert card["content"][ACTION_KEY]["args"] == {
        "owner": "acme",
        "repo": "web",
        "title": "Fix it",
    }
    await react(team.alice, session, card["event_id"], "✅")
    await wait_status(bob, session, card, "done")
    [run] = composio.executions_of("GITHUB_CREATE_AN_ISSUE")
    assert run.arguments == {"owner": "acme", "repo": "web", "title": "Fix it"}
    assert run.version == "20251027_00" and run.user_id == team.alice.user_id
    body = latest(bob, session, card)["body"]
    assert "https://github.com/acme/web/issues/" in body
    detail = await command(bob, session, "!tool GITHUB_CREATE_AN_ISSUE")
    assert "The title of the issue" in detail
