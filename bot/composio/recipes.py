"""Recipes: a few Composio tools put together into one action people ask for by name.

- `create_github_template(repo_name, template)`: a GitHub repository made from a template.
- `create_notion_itinerary(trip_name, days, cities, prefs)`: a Notion page, a day-by-day plan.
- `create_budget_sheet(sheet_name, items)`: a Google Sheet of items with a total.

Each runs the Composio tools at a pinned toolkit version (PINNED_VERSIONS, which
`composio.toolkit_versions` may override): a recipe is written against the argument and result
shapes of that version, and composio 0.29 refuses to run "latest" anyway.

Each looks before it creates: when what it would make exists already (a repository of that name,
a page or a spreadsheet with that title), it links to it and changes nothing. So a run that is
repeated with the same idempotency key (after a restart) never makes a second one.

The shaping of what is sent (the plan of days, the rows of the sheet) is pure and tested alone.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bot.composio.tools import Session, find_value, needs_accounts, open_session
from bot.core import strings
from bot.core.errors import UserError
from bot.tools.registry import Tool, ToolCall, ToolResult

PINNED_VERSIONS: dict[str, str] = {
    "github": "20251027_00",
    "notion": "20251027_00",
    "googlesheets": "20251027_00",
}

# The Composio tools the recipes use.
GITHUB_ME = "GITHUB_GET_THE_AUTHENTICATED_USER"
GITHUB_GET_REPO = "GITHUB_GET_A_REPOSITORY"
GITHUB_FROM_TEMPLATE = "GITHUB_CREATE_A_REPOSITORY_USING_A_TEMPLATE"
NOTION_SEARCH = "NOTION_SEARCH_NOTION_PAGE"
NOTION_CREATE_PAGE = "NOTION_CREATE_NOTION_PAGE"
NOTION_ADD_CONTENT = "NOTION_ADD_MULTIPLE_PAGE_CONTENT"
SHEETS_SEARCH = "GOOGLESHEETS_SEARCH_SPREADSHEETS"
SHEETS_CREATE = "GOOGLESHEETS_CREATE_GOOGLE_SHEET1"
SHEETS_WRITE = "GOOGLESHEETS_BATCH_UPDATE"

_NOT_FOUND = re.compile(r"\b404\b|not found", re.I)
_NOTION_ID = re.compile(r"([0-9a-f]{32}|[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12})(?:[?#]|$)")


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def is_not_found(error: str | None) -> bool:
    return bool(error and _NOT_FOUND.search(error))


# GitHub ----------------------------------------------------------------------------------------


class GithubTemplateArgs(_Args):
    repo_name: str = Field(
        pattern=r"^[A-Za-z0-9._-]{1,100}$", description="Name of the new repository"
    )
    template: str = Field(
        pattern=r"^(?:[A-Za-z0-9-]{1,39}/)?[A-Za-z0-9._-]{1,100}$",
        description="The template repository: OWNER/NAME, or NAME for one of the account's own",
    )
    private: bool = Field(default=True, description="Make the repository private")
    description: str = Field(
        default="", max_length=350, description="The repository's description"
    )


def split_template(template: str, login: str) -> tuple[str, str]:
    """(owner, name) of the template repository; a bare NAME is one of the account's own."""
    owner, sep, name = template.partition("/")
    return (owner, name) if sep else (login, template)


async def create_github_template(call: ToolCall, args: GithubTemplateArgs) -> ToolResult:
    session = await open_session(call, "github", PINNED_VERSIONS["github"])
    login = str(find_value(await session.run(GITHUB_ME, {}), "login") or "")
    if not login:
        raise UserError(strings.COMPOSIO_UNEXPECTED.format(tool=GITHUB_ME))
    owner, name = split_template(args.template, login)
    existing = await session.look(GITHUB_GET_REPO, {"owner": login, "repo": args.repo_name})
    if existing.successful:
        repo, existed = existing.data, True
    elif is_not_found(existing.error):
        arguments: dict[str, Any] = {
            "template_owner": owner,
            "template_repo": name,
            "owner": login,
            "name": args.repo_name,
            "private": args.private,
            "include_all_branches": False,
        }
        if args.description:
            arguments["description"] = args.description
        repo, existed = await session.run(GITHUB_FROM_TEMPLATE, arguments), False
    else:
        raise UserError(
            strings.COMPOSIO_TOOL_FAILED.format(tool=GITHUB_GET_REPO, error=existing.error)
        )
    full_name = str(find_value(repo, "full_name") or f"{login}/{args.repo_name}")
    url = str(find_value(repo, "html_url") or f"https://github.com/{full_name}")
    text = strings.GITHUB_REPO_EXISTS if existed else strings.GITHUB_REPO_CREATED
    return ToolResult(
        summary=text.format(repo=full_name, url=url, template=f"{owner}/{name}"),
        data={
            "url": url,
            "repo": full_name,
            "template": f"{owner}/{name}",
            "existed": existed,
            "account": session.account.id,
            "toolkit_version": session.version,
        },
        external_ids=[url],
    )


# Notion ----------------------------------------------------------------------------------------


def _list_of_words(value: Any) -> Any:
    """`cities="Lisbon, Porto"` typed in a room is a list of two cities."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


City = Annotated[str, Field(min_length=1, max_length=100)]


class ItineraryArgs(_Args):
    trip_name: str = Field(min_length=1, max_length=200, description="Title of the itinerary")
    days: int = Field(ge=1, le=60, description="How many days")
    cities: list[City] = Field(
        min_length=1, max_length=30, description="Cities in the order visited"
    )
    prefs: str = Field(
        default="", max_length=2000, description="Preferences: pace, interests, budget, …"
    )
    parent_page: str | None = Field(
        default=None,
        description="Notion page (ID or link) to put it under; default: the first one shared",
    )

    _cities = field_validator("cities", mode="before")(_list_of_words)


def plan_days(days: int, cities: list[str]) -> list[list[str]]:
    """For each day, the cities of that day: consecutive stretches in the order given, the first
    cities getting the extra days; with fewer days than cities, some days see several."""
    count = len(cities)
    if days >= count:
        return [[cities[day * count // days]] for day in range(days)]
    plan: list[list[str]] = [[] for _ in range(days)]
    for index, city in enumerate(cities):
        plan[index * days // count].append(city)
    return plan


def itinerary_blocks(days: int, cities: list[str], prefs: str) -> list[dict[str, str]]:
    """The page's content: Composio's Notion content blocks (content + block_property)."""
    plan = plan_days(days, cities)
    blocks = [
        {
            "content": strings.ITINERARY_INTRO.format(days=days, route=" → ".join(cities)),
            "block_property": "paragraph",
        }
    ]
    if prefs:
        blocks.append(
            {"content": strings.ITINERARY_PREFS.format(prefs=prefs), "block_property": "callout"}
        )
    previous: str | None = None
    for number, today in enumerate(plan, start=1):
        blocks.append(
            {
                "content": strings.ITINERARY_DAY.format(number=number, cities=" → ".join(today)),
                "block_property": "heading_2",
            }
        )
        if previous is not None and today[0] != previous:
            blocks.append(
                {
                    "content": strings.ITINERARY_TRAVEL.format(start=previous, end=today[0]),
                    "block_property": "bulleted_list_item",
                }
            )
        for part in strings.ITINERARY_PARTS:
            blocks.append({"content": part, "block_property": "to_do"})
        previous = today[-1]
    return blocks


def notion_title(page: Any) -> str:
    """The title of a Notion page object (its one property of type title)."""
    properties = page.get("properties") if isinstance(page, dict) else None
    if not isinstance(properties, dict):
        return ""
    for prop in properties.values():
        if isinstance(prop, dict) and prop.get("type") == "title":
            return "".join(
                str(part.get("plain_text", "")) for part in prop.get("title") or [] if part
            )
    return ""


def notion_page_id(text: str) -> str:
    """A Notion page ID from an ID or a link (the 32 hex digits at its end)."""
    found = _NOTION_ID.search(text.strip().lower())
    if not found:
        raise UserError(strings.NOTION_BAD_PAGE.format(page=text))
    bare = found[1].replace("-", "")
    return f"{bare[:8]}-{bare[8:12]}-{bare[12:16]}-{bare[16:20]}-{bare[20:]}"


def _pages(data: dict[str, Any]) -> list[dict[str, Any]]:
    results = find_value(data, "results")
    return [p for p in results if isinstance(p, dict)] if isinstance(results, list) else []


async def _notion_parent(session: Session, given: str | None) -> str:
    if given:
        return notion_page_id(given)
    shared = _pages(await session.run(NOTION_SEARCH, {"query": "", "filter_value": "page"}))
    if not shared or not shared[0].get("id"):
        raise UserError(strings.NOTION_NO_PARENT)
    return str(shared[0]["id"])


async def create_notion_itinerary(call: ToolCall, args: ItineraryArgs) -> ToolResult:
    session = await open_session(call, "notion", PINNED_VERSIONS["notion"])
    found = _pages(
        await session.run(NOTION_SEARCH, {"query": args.trip_name, "filter_value": "page"})
    )
    page = next((p for p in found if notion_title(p) == args.trip_name), None)
    existed = page is not None
    if page is None:
        parent = await _notion_parent(session, args.parent_page)
        page = await session.run(
            NOTION_CREATE_PAGE, {"parent_id": parent, "title": args.trip_name}
        )
        page_id = str(find_value(page, "id") or "")
        if not page_id:
            raise UserError(strings.COMPOSIO_UNEXPECTED.format(tool=NOTION_CREATE_PAGE))
        await session.run(
            NOTION_ADD_CONTENT,
            {
                "parent_block_id": page_id,
                "content_blocks": itinerary_blocks(args.days, args.cities, args.prefs),
            },
        )
    page_id = str(find_value(page, "id") or "")
    url = str(find_value(page, "url") or f"https://www.notion.so/{page_id.replace('-', '')}")
    text = strings.NOTION_ITINERARY_EXISTS if existed else strings.NOTION_ITINERARY_CREATED
    return ToolResult(
        summary=text.format(
            title=args.trip_name, url=url, days=args.days, cities=", ".join(args.cities)
        ),
        data={
            "url": url,
            "page_id": page_id,
            "existed": existed,
            "account": session.account.id,
            "toolkit_version": session.version,
        },
        external_ids=[url, page_id],
    )


# Google Sheets ---------------------------------------------------------------------------------

_ITEM_TEXT = re.compile(
    r"^(?P<name>.+?)\s*[:=]\s*\$?(?P<amount>-?[\d.,]+)\s*(?:\((?P<cat>.+)\))?$"
)


class BudgetItem(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=200)
    amount: Decimal = Field(ge=-1_000_000_000, le=1_000_000_000, decimal_places=2)
    category: str = Field(default="", max_length=100)


def parse_item(value: Any) -> Any:
    """`"Flights: 1200"`, `"Hotel = 80.50 (lodging)"` as typed, or a {name, amount} object."""
    if not isinstance(value, str):
        return value
    match = _ITEM_TEXT.match(value.strip())
    if not match:
        raise ValueError(f"`{value}` is not `NAME: AMOUNT` (like `Flights: 1200`)")
    amount = match["amount"].replace(",", "")
    try:
        Decimal(amount)
    except InvalidOperation:
        raise ValueError(f"`{match['amount']}` is not an amount") from None
    return {"name": match["name"], "amount": amount, "category": match["cat"] or ""}


class BudgetArgs(_Args):
    sheet_name: str = Field(min_length=1, max_length=100, description="Title of the spreadsheet")
    items: list[BudgetItem] = Field(
        min_length=1,
        max_length=500,
        description='Items: "NAME: AMOUNT" each, or objects {name, amount, category}',
    )

    @field_validator("items", mode="before")
    @classmethod
    def _items(cls, value: Any) -> Any:
        items = value if isinstance(value, list) else [value]
        return [parse_item(item) for item in items]


def budget_rows(items: list[BudgetItem]) -> list[list[str | float]]:
    """The sheet's cells: a header, one row per item, and a total that is a formula."""
    rows: list[list[str | float]] = [list(strings.BUDGET_HEADER)]
    rows += [[item.name, item.category, float(item.amount)] for item in items]
    rows.append([strings.BUDGET_TOTAL, "", f"=SUM(C2:C{len(items) + 1})"])
    return rows


def budget_total(items: list[BudgetItem]) -> Decimal:
    return sum((item.amount for item in items), Decimal(0))


async def create_budget_sheet(call: ToolCall, args: BudgetArgs) -> ToolResult:
    session = await open_session(call, "googlesheets", PINNED_VERSIONS["googlesheets"])
    found = find_value(
        await session.run(SHEETS_SEARCH, {"query": args.sheet_name, "max_results": 20}),
        "spreadsheets",
    )
    same = [
        s
        for s in (found if isinstance(found, list) else [])
        if isinstance(s, dict) and s.get("name") == args.sheet_name
    ]
    existed = bool(same)
    if same:
        sheet_id = str(same[0].get("id") or "")
        url = str(
            same[0].get("webViewLink") or f"https://docs.google.com/spreadsheets/d/{sheet_id}"
        )
    else:
        made = await session.run(SHEETS_CREATE, {"title": args.sheet_name})
        sheet_id = str(find_value(made, "spreadsheetId") or "")
        if not sheet_id:
            raise UserError(strings.COMPOSIO_UNEXPECTED.format(tool=SHEETS_CREATE))
        url = str(
            find_value(made, "spreadsheetUrl")
            or f"https://docs.google.com/spreadsheets/d/{sheet_id}"
        )
        await session.run(
            SHEETS_WRITE,
            {
                "spreadsheet_id": sheet_id,
                "sheet_name": "Sheet1",
                "first_cell_location": "A1",
                "values": budget_rows(args.items),
                "valueInputOption": "USER_ENTERED",
            },
        )
    total = budget_total(args.items)
    text = strings.SHEET_EXISTS if existed else strings.SHEET_CREATED
    return ToolResult(
        summary=text.format(name=args.sheet_name, url=url, count=len(args.items), total=total),
        data={
            "url": url,
            "spreadsheet_id": sheet_id,
            "existed": existed,
            "total": str(total),
            "account": session.account.id,
            "toolkit_version": session.version,
        },
        external_ids=[url, sheet_id],
    )


def recipe_tools() -> list[Tool]:
    """The recipes, for the registry (when Composio is on)."""
    return [
        Tool(
            "create_github_template",
            "1",
            "Create a GitHub repository from a template repository (Composio, github).",
            GithubTemplateArgs,
            create_github_template,
            executor="composio",
            idempotent=True,
            precheck=needs_accounts("github"),
        ),
        Tool(
            "create_notion_itinerary",
            "1",
            "Create a day-by-day trip itinerary page in Notion (Composio, notion).",
            ItineraryArgs,
            create_notion_itinerary,
            executor="composio",
            idempotent=True,
            precheck=needs_accounts("notion"),
        ),
        Tool(
            "create_budget_sheet",
            "1",
            "Create a Google Sheet of budget items with their total (Composio, googlesheets).",
            BudgetArgs,
            create_budget_sheet,
            executor="composio",
            idempotent=True,
            precheck=needs_accounts("googlesheets"),
        ),
    ]
