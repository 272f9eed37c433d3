"""A fake Composio on 127.0.0.1: the v3.1 endpoints the official SDK (composio 0.29) calls, with
connected accounts and tool executions a test can script and inspect.

    async with FakeComposio() as composio:
        config = bot_config(composio=composio.config(github="ac_github"))
        ...
        composio.connect("@alice:localhost", "github")           # she finished the OAuth flow
        composio.fail("GITHUB_CREATE_AN_ISSUE", "Validation Failed")
        ...
        [run] = composio.executions_of("GITHUB_CREATE_A_REPOSITORY_USING_A_TEMPLATE")
        assert run.connected_account_id == account.id and run.version == "20251027_00"

Endpoints (every one checks the `x-api-key` header: 401 otherwise):
- GET  /api/v3.1/tools/{slug}                 a tool's schema (the SDK reads it before executing)
- GET  /api/v3.1/tools?tool_slugs=A,B         schemas of several tools (`tools.get`)
- POST /api/v3.1/tools/execute/{slug}         runs a tool: `{data, error, successful, log_id}`.
  Refused with 400 without a `version` or with an unknown `connected_account_id`, like the API.
- GET  /api/v3.1/connected_accounts           filtered by user_ids, toolkit_slugs, statuses,
                                              auth_config_ids, connected_account_ids
- POST /api/v3.1/connected_accounts/link      a Connect Link; the account starts INITIATED
- GET|DELETE /api/v3.1/connected_accounts/{id}

Tools behave like a tiny GitHub, Notion and Google Drive (`FakeWorld`), per connected account,
so the recipes can be run end to end; `on(slug, handler)` replaces or adds behaviour.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from aiohttp import web

from tests.fakes.server import FakeServer

API_KEY = "test-composio-key"
JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Execution:
    """One POST /tools/execute/{slug} the fake received."""

    slug: str
    arguments: JSON
    user_id: str | None
    connected_account_id: str | None
    version: str | None


@dataclass
class Account:
    id: str
    user_id: str
    toolkit: str
    auth_config_id: str
    status: str = "ACTIVE"
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())


class ToolFailure(Exception):
    """Raised by a handler: the execution answers `successful: false` with this error."""


class HttpFailure(Exception):
    """Raised by a handler: the endpoint answers this HTTP status with a v3.1 error body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


Handler = Callable[[Execution], JSON | Awaitable[JSON]]


def _schema(properties: dict[str, JSON], required: list[str]) -> JSON:
    return {"type": "object", "properties": properties, "required": required}


def _string(description: str) -> JSON:
    return {"type": "string", "description": description}


TOOLS: dict[str, tuple[str, JSON]] = {
    # slug: (toolkit, input parameters), as the fake serves them.
    "GITHUB_GET_THE_AUTHENTICATED_USER": ("github", _schema({}, [])),
    "GITHUB_GET_A_REPOSITORY": (
        "github",
        _schema({"owner": _string("Owner"), "repo": _string("Repository")}, ["owner", "repo"]),
    ),
    "GITHUB_CREATE_A_REPOSITORY_USING_A_TEMPLATE": (
        "github",
        _schema(
            {
                "template_owner": _string("Owner of the template"),
                "template_repo": _string("Name of the template"),
                "owner": _string("Owner of the new repository"),
                "name": _string("Name of the new repository"),
                "description": _string("Description"),
                "private": {"type": "boolean", "default": False},
                "include_all_branches": {"type": "boolean", "default": False},
            },
            ["template_owner", "template_repo", "name"],
        ),
    ),
    "GITHUB_CREATE_AN_ISSUE": (
        "github",
        _schema(
            {
                "owner": _string("The account owner of the repository"),
                "repo": _string("The name of the repository"),
                "title": _string("The title of the issue"),
                "body": _string("The contents of the issue"),
                "labels": {"type": "array", "items": {"type": "string"}, "default": None},
            },
            ["owner", "repo", "title"],
        ),
    ),
    "NOTION_SEARCH_NOTION_PAGE": (
        "notion",
        _schema({"query": _string("Text to look for"), "filter_value": _string("page")}, []),
    ),
    "NOTION_CREATE_NOTION_PAGE": (
        "notion",
        _schema({"parent_id": _string("Parent page"), "title": _string("Title")}, ["title"]),
    ),
    "NOTION_ADD_MULTIPLE_PAGE_CONTENT": (
        "notion",
        _schema(
            {
                "parent_block_id": _string("Page"),
                "content_blocks": {"type": "array", "items": {"type": "object"}},
            },
            ["parent_block_id", "content_blocks"],
        ),
    ),
    "GOOGLESHEETS_SEARCH_SPREADSHEETS": (
        "googlesheets",
        _schema({"query": _string("Name"), "max_results": {"type": "integer"}}, []),
    ),
    "GOOGLESHEETS_CREATE_GOOGLE_SHEET1": (
        "googlesheets",
        _schema({"title": _string("Title")}, []),
    ),
    "GOOGLESHEETS_BATCH_UPDATE": (
        "googlesheets",
        _schema(
            {
                "spreadsheet_id": _string("Spreadsheet"),
                "sheet_name": _string("Sheet"),
                "first_cell_location": _string("A1"),
                "values": {"type": "array", "items": {"type": "array"}},
                "valueInputOption": _string("RAW or USER_ENTERED"),
            },
            ["spreadsheet_id", "sheet_name", "values"],
        ),
    ),
}

TOOL_VERSION = "20251027_00"


class FakeWorld:
    """What the tools act on, per connected account: repositories, pages, spreadsheets."""

    def __init__(self, server: FakeComposio) -> None:
        self.server = server
        self.repos: dict[str, JSON] = {}
        """full_name → repository."""
        self.pages: dict[str, JSON] = {}
        """page ID → {page, parent, blocks, account}."""
        self.sheets: dict[str, JSON] = {}
        """spreadsheet ID → {name, values, account}."""
        self._ids = itertools.count(1)

    def login(self, run: Execution) -> str:
        account = self.server.accounts[run.connected_account_id or ""]
        return re.sub(r"[^A-Za-z0-9-]", "-", account.user_id.lstrip("@").split(":")[0])

    def handlers(self) -> dict[str, Handler]:
        return {
            "GITHUB_GET_THE_AUTHENTICATED_USER": self.github_me,
            "GITHUB_GET_A_REPOSITORY": self.github_get_repo,
            "GITHUB_CREATE_A_REPOSITORY_USING_A_TEMPLATE": self.github_from_template,
            "GITHUB_CREATE_AN_ISSUE": self.github_issue,
            "NOTION_SEARCH_NOTION_PAGE": self.notion_search,
            "NOTION_CREATE_NOTION_PAGE": self.notion_create,
            "NOTION_ADD_MULTIPLE_PAGE_CONTENT": self.notion_add,
            "GOOGLESHEETS_SEARCH_SPREADSHEETS": self.sheets_search,
            "GOOGLESHEETS_CREATE_GOOGLE_SHEET1": self.sheets_create,
            "GOOGLESHEETS_BATCH_UPDATE": self.sheets_write,
        }

    # GitHub

    def github_me(self, run: Execution) -> JSON:
        login = self.login(run)
        return {"login": login, "id": 1000, "html_url": f"https://github.com/{login}"}

    def _repo(self, owner: str, name: str, private: bool) -> JSON:
        return {
            "id": next(self._ids),
            "name": name,
            "full_name": f"{owner}/{name}",
            "private": private,
            "owner": {"login": owner, "avatar_url": "https://avatars.example/u/1"},
            "url": f"https://api.github.com/repos/{owner}/{name}",
            "html_url": f"https://github.com/{owner}/{name}",
        }

    def github_get_repo(self, run: Execution) -> JSON:
        full_name = f"{run.arguments['owner']}/{run.arguments['repo']}"
        if full_name not in self.repos:
            raise ToolFailure(
                f"404 Client Error: Not Found for url: https://api.github.com/repos/{full_name}"
            )
        return {"details": self.repos[full_name]}

    def github_from_template(self, run: Execution) -> JSON:
        owner = run.arguments.get("owner") or self.login(run)
        name = run.arguments["name"]
        if f"{owner}/{name}" in self.repos:
            raise ToolFailure("Repository creation failed: name already exists on this account")
        repo = self._repo(owner, name, bool(run.arguments.get("private")))
        self.repos[repo["full_name"]] = repo
        return repo

    def github_issue(self, run: Execution) -> JSON:
        owner, repo = run.arguments["owner"], run.arguments["repo"]
        number = next(self._ids)
        return {
            "number": number,
            "title": run.arguments["title"],
            "html_url": f"https://github.com/{owner}/{repo}/issues/{number}",
        }

    # Notion

    def _page(self, page_id: str, title: str) -> JSON:
        return {
            "object": "page",
            "id": page_id,
            "url": f"https://www.notion.so/{title.replace(' ', '-')}-{page_id.replace('-', '')}",
            "properties": {
                "title": {"id": "title", "type": "title", "title": [{"plain_text": title}]}
            },
        }

    def share_page(self, run_as: Account, title: str) -> JSON:
        """A page the account's Notion integration can see (to put new pages under)."""
        number = next(self._ids)
        page_id = f"{number:08x}-0000-4000-8000-{number:012x}"
        page = self._page(page_id, title)
        self.pages[page_id] = {"page": page, "parent": None, "blocks": [], "account": run_as.id}
        return page

    def notion_search(self, run: Execution) -> JSON:
        query = str(run.arguments.get("query") or "").lower()
        results = [
            p["page"]
            for p in self.pages.values()
            if p["account"] == run.connected_account_id
            and query in p["page"]["properties"]["title"]["title"][0]["plain_text"].lower()
        ]
        return {"response_data": {"object": "list", "results": results}}

    def notion_create(self, run: Execution) -> JSON:
        parent = run.arguments.get("parent_id")
        if parent not in self.pages:
            raise ToolFailure(f"Could not find page with ID: {parent}")
        number = next(self._ids)
        page_id = f"{number:08x}-0000-4000-8000-{number:012x}"
        page = self._page(page_id, run.arguments["title"])
        self.pages[page_id] = {
            "page": page,
            "parent": parent,
            "blocks": [],
            "account": run.connected_account_id,
        }
        return page

    def notion_add(self, run: Execution) -> JSON:
        page = self.pages.get(run.arguments["parent_block_id"])
        if page is None:
            raise ToolFailure("Could not find block")
        page["blocks"] += run.arguments["content_blocks"]
        return {"results": [{"object": "block"} for _ in run.arguments["content_blocks"]]}

    # Google Sheets

    def sheets_search(self, run: Execution) -> JSON:
        query = str(run.arguments.get("query") or "").lower()
        found = [
            {
                "id": sheet_id,
                "name": sheet["name"],
                "webViewLink": f"https://docs.google.com/spreadsheets/d/{sheet_id}/edit",
            }
            for sheet_id, sheet in self.sheets.items()
            if sheet["account"] == run.connected_account_id and query in sheet["name"].lower()
        ]
        return {"spreadsheets": found}

    def sheets_create(self, run: Execution) -> JSON:
        sheet_id = f"sheet{next(self._ids)}"
        self.sheets[sheet_id] = {
            "name": run.arguments["title"],
            "values": [],
            "account": run.connected_account_id,
        }
        return {
            "spreadsheetId": sheet_id,
            "spreadsheetUrl": f"https://docs.google.com/spreadsheets/d/{sheet_id}/edit",
            "properties": {"title": run.arguments["title"]},
        }

    def sheets_write(self, run: Execution) -> JSON:
        sheet = self.sheets.get(run.arguments["spreadsheet_id"])
        if sheet is None:
            raise ToolFailure("Requested entity was not found.")
        sheet["values"] = run.arguments["values"]
        return {"updatedRows": len(run.arguments["values"])}


class FakeComposio(FakeServer):
    def __init__(self, api_key: str = API_KEY) -> None:
        super().__init__()
        self.api_key = api_key
        self.accounts: dict[str, Account] = {}
        self.executions: list[Execution] = []
        self.links: list[JSON] = []
        """Bodies of POST /connected_accounts/link."""
        self.deleted: list[str] = []
        self.world = FakeWorld(self)
        self.handlers: dict[str, Handler] = self.world.handlers()
        self.tools: dict[str, tuple[str, JSON]] = dict(TOOLS)
        self.down_for: set[str] = set()
        """Path prefixes answered with 503 (a Composio outage)."""
        self._ids = itertools.count(1)

    async def __aenter__(self) -> FakeComposio:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- scripting -------------------------------------------------------------------------

    def config(self, **auth_configs: str) -> JSON:
        """The `composio` config section pointing at this fake, with toolkit → auth config."""
        return {
            "api_key": self.api_key,
            "base_url": self.url,
            "timeout": 10,
            "auth_configs": auth_configs,
        }

    def connect(self, user_id: str, toolkit: str, status: str = "ACTIVE") -> Account:
        """An account the person linked (as if they had finished the OAuth flow)."""
        account = Account(
            id=f"ca_{toolkit}{next(self._ids)}",
            user_id=user_id,
            toolkit=toolkit,
            auth_config_id=f"ac_{toolkit}",
            status=status,
        )
        self.accounts[account.id] = account
        return account

    def complete(self, account_id: str) -> Account:
        """The person finished the flow a Connect Link started."""
        self.accounts[account_id].status = "ACTIVE"
        return self.accounts[account_id]

    def on(self, slug: str, handler: Handler, toolkit: str | None = None) -> None:
        """Make `slug` do this (a new tool needs its toolkit; it gets an empty schema)."""
        self.handlers[slug] = handler
        if slug not in self.tools:
            assert toolkit, f"{slug} is a new tool: say its toolkit"
            self.tools[slug] = (toolkit, _schema({}, []))

    def fail(self, slug: str, error: str) -> None:
        """Executions of `slug` answer `successful: false` with `error`."""

        def failing(run: Execution) -> JSON:
            raise ToolFailure(error)

        self.handlers[slug] = failing

    def refuse(self, slug: str, status: int, message: str) -> None:
        """Executions of `slug` answer HTTP `status` with a v3.1 error body."""

        def refusing(run: Execution) -> JSON:
            raise HttpFailure(status, message)

        self.handlers[slug] = refusing

    def executions_of(self, slug: str) -> list[Execution]:
        return [e for e in self.executions if e.slug == slug]

    def of_user(self, user_id: str) -> list[Account]:
        return [a for a in self.accounts.values() if a.user_id == user_id]

    # --- wire format -----------------------------------------------------------------------

    def _routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v3.1/tools", self._list_tools)
        app.router.add_get("/api/v3.1/tools/{slug}", self._get_tool)
        app.router.add_post("/api/v3.1/tools/execute/{slug}", self._execute)
        app.router.add_get("/api/v3.1/connected_accounts", self._list_accounts)
        app.router.add_post("/api/v3.1/connected_accounts/link", self._link)
        app.router.add_get("/api/v3.1/connected_accounts/{id}", self._get_account)
        app.router.add_delete("/api/v3.1/connected_accounts/{id}", self._delete_account)
        app.middlewares.append(self._guard)

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        await self.record(request)
        if request.headers.get("x-api-key") != self.api_key:
            return _error(401, "Invalid API key")
        if any(request.path.startswith(prefix) for prefix in self.down_for):
            return _error(503, "Service temporarily unavailable")
        return await handler(request)

    def _tool(self, slug: str) -> JSON:
        toolkit, parameters = self.tools[slug]
        name = slug.replace("_", " ").title()
        return {
            "slug": slug,
            "name": name,
            "description": f"{name} (fake)",
            "human_description": None,
            "input_parameters": parameters,
            "output_parameters": {"type": "object", "properties": {}},
            "available_versions": [TOOL_VERSION],
            "version": TOOL_VERSION,
            "is_deprecated": False,
            "deprecated": {
                "available_versions": [TOOL_VERSION],
                "displayName": name,
                "is_deprecated": False,
                "toolkit": {"logo": "https://logos.example/x.png"},
                "version": TOOL_VERSION,
            },
            "no_auth": False,
            "scopes": [],
            "tags": [],
            "toolkit": {"slug": toolkit, "name": toolkit.title(), "logo": "https://logos.example"},
        }

    async def _list_tools(self, request: web.Request) -> web.Response:
        slugs = [s for s in request.query.get("tool_slugs", "").split(",") if s]
        toolkit = request.query.get("toolkit_slug")
        items = [
            self._tool(slug)
            for slug in (slugs or sorted(self.tools))
            if slug in self.tools and (toolkit is None or self.tools[slug][0] == toolkit)
        ]
        return web.json_response(_page(items))

    async def _get_tool(self, request: web.Request) -> web.Response:
        slug = request.match_info["slug"]
        if slug not in self.tools:
            return _error(404, f"Tool {slug} not found")
        return web.json_response(self._tool(slug))

    async def _execute(self, request: web.Request) -> web.Response:
        slug = request.match_info["slug"]
        body = await request.json()
        run = Execution(
            slug=slug,
            arguments=dict(body.get("arguments") or {}),
            user_id=body.get("user_id"),
            connected_account_id=body.get("connected_account_id"),
            version=body.get("version"),
        )
        if slug not in self.tools:
            return _error(404, f"Tool {slug} not found")
        if not run.version or run.version == "latest":
            return _error(400, "A toolkit version is required")
        account = self.accounts.get(run.connected_account_id or "")
        if account is None or account.status != "ACTIVE":
            return _error(400, f"Connected account {run.connected_account_id} not found")
        if account.user_id != run.user_id or account.toolkit != self.tools[slug][0]:
            return _error(400, "Connected account does not belong to this user and toolkit")
        self.executions.append(run)
        handler = self.handlers.get(slug)
        try:
            if handler is None:
                data: JSON = {}
            else:
                result = handler(run)
                data = await result if isinstance(result, Awaitable) else result
        except ToolFailure as e:
            return web.json_response(
                {"data": {}, "error": str(e), "successful": False, "log_id": "log_1"}
            )
        except HttpFailure as e:
            return _error(e.status, e.message)
        return web.json_response(
            {
                "data": data,
                "error": None,
                "successful": True,
                "log_id": f"log_{len(self.executions)}",
            }
        )

    def _account_json(self, account: Account) -> JSON:
        return {
            "id": account.id,
            "alias": None,
            "word_id": None,
            "user_id": account.user_id,
            "status": account.status,
            "status_reason": None,
            "is_disabled": False,
            "created_at": account.created_at,
            "updated_at": account.created_at,
            "toolkit": {"slug": account.toolkit},
            "auth_config": {
                "id": account.auth_config_id,
                "auth_scheme": "OAUTH2",
                "is_composio_managed": True,
                "is_disabled": False,
            },
            "state": {"authScheme": "OAUTH2", "val": {"status": account.status}},
            "data": {},
            "params": {},
            "test_request_endpoint": None,
        }

    async def _list_accounts(self, request: web.Request) -> web.Response:
        def wanted(name: str) -> set[str] | None:
            raw = request.query.get(name)
            return {v for v in raw.split(",") if v} if raw else None

        filters = {
            "user_id": wanted("user_ids"),
            "toolkit": wanted("toolkit_slugs"),
            "status": wanted("statuses"),
            "auth_config_id": wanted("auth_config_ids"),
            "id": wanted("connected_account_ids"),
        }
        found = [
            a
            for a in self.accounts.values()
            if all(values is None or getattr(a, key) in values for key, values in filters.items())
        ]
        found.sort(
            key=lambda a: a.created_at, reverse=request.query.get("order_direction") == "desc"
        )
        return web.json_response(_page([self._account_json(a) for a in found]))

    async def _link(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.links.append(body)
        user_id, auth_config = body.get("user_id"), body.get("auth_config_id")
        if not user_id or not auth_config:
            return _error(400, "user_id and auth_config_id are required")
        toolkit = str(auth_config).removeprefix("ac_")
        account = self.connect(user_id, toolkit, status="INITIATED")
        account.auth_config_id = auth_config
        expires = datetime.now(UTC) + timedelta(minutes=10)
        return web.json_response(
            {
                "connected_account_id": account.id,
                "link_token": f"lt_{account.id}",
                "redirect_url": f"https://connect.composio.example/link/lt_{account.id}",
                "expires_at": expires.isoformat(),
            },
            status=201,
        )

    async def _get_account(self, request: web.Request) -> web.Response:
        account = self.accounts.get(request.match_info["id"])
        if account is None:
            return _error(404, "Connected account not found")
        return web.json_response(self._account_json(account))

    async def _delete_account(self, request: web.Request) -> web.Response:
        account = self.accounts.pop(request.match_info["id"], None)
        if account is None:
            return _error(404, "Connected account not found")
        self.deleted.append(account.id)
        return web.json_response({"success": True})


def _page(items: list[JSON]) -> JSON:
    return {
        "items": items,
        "next_cursor": None,
        "total_items": len(items),
        "total_pages": 1,
        "current_page": 1,
    }


def _error(status: int, message: str) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "code": status, "status": status}}, status=status
    )
