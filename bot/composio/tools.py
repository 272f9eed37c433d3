"""Composio tools in the registry: whose account runs them, and any Composio tool by its slug.

Which account runs a workspace's action is the workspace setting `composio_account`: the host's
(the default) or the requester's. A Composio tool checks that the account exists when it runs
(UserError naming who must `!connect` what, shown on the card), and offers the same check as its
`Tool.precheck`, for the @act flow to make before it posts the card (`Tool.check`).

A tool a blueprint allows is turned into a `Tool` from the schema Composio serves for it:
`await composio_tools(ctx, ["GITHUB_CREATE_AN_ISSUE"])`. Its arguments model comes from the
tool's JSON schema (json-schema-to-pydantic, which composio itself depends on); it runs at the
toolkit version pinned in `composio.toolkit_versions`, or else at the version Composio reported
with the schema, so that the schema people were shown and the one that runs are the same.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from json_schema_to_pydantic import create_model
from pydantic import BaseModel, ConfigDict

from bot.composio.client import Account, ComposioClient, Execution, ToolSchema, brief
from bot.core import strings
from bot.core.errors import UserError
from bot.tools.context import ToolContext
from bot.tools.registry import Tool, ToolCall, ToolResult

if TYPE_CHECKING:
    from bot.workspaces.store import Workspace

_URL = re.compile(r"^https?://\S+$")


def require_composio(ctx: ToolContext) -> ComposioClient:
    if ctx.composio is None:
        raise UserError(strings.COMPOSIO_OFF)
    return ctx.composio


def runner_of(workspace: Workspace, requested_by: str) -> str:
    """The person whose account runs the workspace's Composio actions."""
    return workspace.host if workspace.settings.composio_account == "host" else requested_by


async def account_for(
    ctx: ToolContext, workspace: Workspace, requested_by: str, toolkit: str
) -> Account:
    """The account that runs an action of `toolkit`; UserError says who must link one."""
    client = require_composio(ctx)
    user = runner_of(workspace, requested_by)
    accounts = await client.accounts(user, toolkit, active_only=True)
    if not accounts:
        whose = (
            strings.COMPOSIO_WHOSE_HOST
            if workspace.settings.composio_account == "host"
            else strings.COMPOSIO_WHOSE_REQUESTER
        )
        raise UserError(
            strings.COMPOSIO_MUST_CONNECT.format(user=user, toolkit=toolkit, whose=whose)
        )
    return accounts[0]  # the newest


@dataclass(frozen=True, slots=True)
class Session:
    """One action's use of Composio: the account it runs with, at one toolkit version."""

    client: ComposioClient
    account: Account
    toolkit: str
    version: str

    async def look(self, slug: str, arguments: dict[str, Any]) -> Execution:
        """Run a tool and return what it answered, successful or not (for look-ups)."""
        return await self.client.execute(
            slug,
            arguments,
            user_id=self.account.user_id,
            account_id=self.account.id,
            version=self.version,
        )

    async def run(self, slug: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """Run a tool; UserError (shown on the card) if it did not succeed."""
        execution = await self.look(slug, arguments)
        if not execution.successful:
            raise UserError(
                strings.COMPOSIO_TOOL_FAILED.format(
                    tool=slug, error=brief(execution.error or strings.COMPOSIO_NO_REASON)
                )
            )
        return execution.data


async def open_session(call: ToolCall, toolkit: str, default_version: str) -> Session:
    client = require_composio(call.ctx)
    account = await account_for(call.ctx, call.workspace, call.requested_by, toolkit)
    return Session(client, account, toolkit, client.version_for(toolkit, default_version))


def needs_accounts(*toolkits: str) -> Callable[[ToolCall, Any], Awaitable[None]]:
    """A precheck: the account that would run the action has each toolkit linked."""

    async def precheck(call: ToolCall, args: Any) -> None:
        for toolkit in toolkits:
            await account_for(call.ctx, call.workspace, call.requested_by, toolkit)

    return precheck


def find_value(data: Any, key: str) -> Any:
    """The first value under `key` anywhere in nested dicts and lists (depth first), or None.

    Composio passes each service's answer through, sometimes wrapped (`{"details": {...}}`,
    `{"response_data": {...}}`), so results are searched rather than indexed.
    """
    if isinstance(data, dict):
        if data.get(key) is not None:
            return data[key]
        children: Iterable[Any] = data.values()
    elif isinstance(data, list):
        children = data
    else:
        return None
    for child in children:
        found = find_value(child, key)
        if found is not None:
            return found
    return None


_PAGE_KEYS = ("html_url", "web_url", "webViewLink", "spreadsheetUrl", "url")


def links_in(data: Any, limit: int = 5) -> list[str]:
    """Links to what a tool made, from its answer: the keys that name a page for people first
    (html_url, webViewLink, …), then any other *url* key (not avatars); without repeats."""
    found: list[str] = []

    def add(value: Any) -> None:
        if isinstance(value, str) and _URL.match(value) and value not in found:
            found.append(value)

    for key in _PAGE_KEYS:
        add(find_value(data, key))

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, child in value.items():
                name = str(key).lower()
                if isinstance(child, str):
                    if "url" in name and "avatar" not in name:
                        add(child)
                else:
                    walk(child)
        elif isinstance(value, list):
            for child in value:
                walk(child)

    walk(data)
    return found[:limit]


# Any Composio tool, by slug -------------------------------------------------------------------


class _ComposioArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


def args_model(schema: ToolSchema) -> type[BaseModel]:
    """The tool's arguments as a pydantic model (extra arguments refused), from its JSON schema."""
    parameters = dict(schema.input_parameters or {"type": "object", "properties": {}})
    parameters.setdefault("type", "object")
    parameters["title"] = "".join(p.capitalize() for p in schema.slug.split("_")) + "Args"
    try:
        model = create_model(
            parameters,
            base_model_type=_ComposioArgs,
            allow_undefined_array_items=True,
            allow_undefined_type=True,
            populate_by_name=True,
        )
    except Exception as e:  # the converter has an error class per kind of schema problem
        raise UserError(
            strings.COMPOSIO_BAD_SCHEMA.format(tool=schema.slug, error=brief(str(e)))
        ) from None
    return cast(type[BaseModel], model)


def _description(schema: ToolSchema) -> str:
    text = brief(schema.description or schema.name or schema.slug, 500)
    return f"{text} (Composio, {schema.toolkit})"


MAX_RESULT_CHARS = 4000
"""A tool's answer is kept in the card (org.doryo.action.result) up to this size as JSON: a
Matrix event holds at most 64 KiB, and a card is edited with its content twice over."""


def _shown_data(data: dict[str, Any], links: list[str]) -> dict[str, Any]:
    if len(json.dumps(data, ensure_ascii=False, default=str)) <= MAX_RESULT_CHARS:
        return {"data": data}
    return {"links": links, "truncated": True}


def tool_from_schema(schema: ToolSchema, version: str) -> Tool:
    """A registry tool that runs the Composio tool `schema.slug` at `version`."""

    async def run(call: ToolCall, args: BaseModel) -> ToolResult:
        session = await open_session(call, schema.toolkit, version)
        arguments = args.model_dump(mode="json", by_alias=True, exclude_unset=True)
        data = await session.run(schema.slug, arguments)
        links = links_in(data)
        shown = "".join(f"\n- {link}" for link in links)
        return ToolResult(
            summary=strings.COMPOSIO_TOOL_DONE.format(
                tool=schema.slug, user=session.account.user_id, links=shown
            ),
            data={"account": session.account.id, **_shown_data(data, links)},
            external_ids=links,
        )

    return Tool(
        name=schema.slug,
        version=version,
        description=_description(schema),
        args=args_model(schema),
        run=run,
        executor="composio",
        writes=True,
        idempotent=False,  # nothing known about the tool: a run cut short is not run again
        precheck=needs_accounts(schema.toolkit),
    )


async def composio_tools(ctx: ToolContext, slugs: Iterable[str]) -> list[Tool]:
    """Registry tools for these Composio tool slugs (what a blueprint allows), in slug order.

    The schemas come from Composio in one request. UserError if Composio is off, cannot be
    reached, or knows no tool of one of the slugs.
    """
    client = require_composio(ctx)
    wanted = sorted({slug.strip().upper() for slug in slugs if slug.strip()})
    if not wanted:
        return []
    schemas = {s.slug.upper(): s for s in await client.schemas(wanted)}
    missing = [slug for slug in wanted if slug not in schemas]
    if missing:
        raise UserError(strings.COMPOSIO_UNKNOWN_TOOLS.format(tools=", ".join(missing)))
    tools = []
    for slug in wanted:
        schema = schemas[slug]
        version = client.version_for(schema.toolkit, schema.version)
        if not version or version.lower() == "latest":  # composio 0.29 refuses to run "latest"
            raise UserError(strings.COMPOSIO_NO_VERSION.format(tool=slug, toolkit=schema.toolkit))
        tools.append(tool_from_schema(schema, version))
    return tools
