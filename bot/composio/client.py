"""The Composio SDK (composio 0.29, used unchanged), wrapped for an asyncio bot.

- The SDK is synchronous (an httpx.Client underneath). Every call runs on a small thread pool of
  its own, never on the event loop, and is bounded twice by `composio.timeout`: the SDK's
  per-request timeout and an asyncio timeout around the whole operation (a tool run is two
  requests the first time: the tool's schema, then the execution).
- Failures become ExternalToolUnavailable (a UserError) whose text says briefly what happened
  (timed out, refused with the API's message, down, unreachable), whether trying later may
  help (`retryable`), and whether the request can have reached Composio (`reached`); the API
  key never appears in it or in the log.
- Telemetry is off. `allow_tracking=False` at construction only sets a contextvar in the
  constructing context, so each worker thread sets it again before it calls the SDK.
- The SDK is imported when a client is made, not with this module: importing it takes more than
  half of the bot's start-up (`import bot.app`: median 11.5 s with it, 4.3 s without), and most
  installs never configure Composio.
- The Composio user is the Matrix user ID. Nothing here stores anything: Composio keeps the
  connected accounts (and their tokens); Doryo only ever handles account IDs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from bot.core import strings
from bot.core.config import ComposioConfig
from bot.core.errors import ConfigError, ExternalToolUnavailable, UserError

if TYPE_CHECKING:
    from composio import Composio

log = logging.getLogger(__name__)

CLOUD_URL = "https://backend.composio.dev"
MAX_PAGES = 20
"""Pages of 100 connected accounts read at most for one person."""

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Account:
    """A connected account at Composio: only its ID and what it is, never a credential."""

    id: str
    user_id: str
    toolkit: str
    status: str
    created_at: str
    auth_config_id: str


@dataclass(frozen=True, slots=True)
class ToolSchema:
    """A Composio tool as its endpoint describes it."""

    slug: str
    name: str
    description: str
    toolkit: str
    version: str
    input_parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Execution:
    """What one tool execution answered: the tool's data, or why it did not succeed."""

    successful: bool
    data: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def brief(text: str, limit: int = 300) -> str:
    """An error message short enough for a card, on one line."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _untracked(function: Callable[[], T]) -> T:
    from composio.core.models.base import allow_tracking

    allow_tracking.set(False)  # this worker thread's context; see the module docstring
    return function()


def _text(value: Any, name: str = "") -> str:
    """A field of a leniently parsed SDK response (a model attribute or a mapping key)."""
    if name:
        value = value.get(name) if isinstance(value, Mapping) else getattr(value, name, None)
    return "" if value is None else str(value)


class ComposioClient:
    def __init__(self, config: ComposioConfig, *, sdk: Composio[Any, Any] | None = None) -> None:
        self.timeout = config.timeout
        self.auth_configs = dict(config.auth_configs)
        """Toolkit slug → auth config ID: the toolkits `!connect` offers."""
        self.versions = dict(config.toolkit_versions)
        """Toolkit slug → pinned version, from the config."""
        from composio import Composio
        from composio import exceptions as sdk_errors

        try:
            self._sdk = sdk or Composio(
                api_key=config.api_key.get_secret_value(),
                base_url=config.base_url or CLOUD_URL,
                allow_tracking=False,
                timeout=max(1, round(config.timeout)),
                # Tool schemas are fetched at the pinned versions (execute names its version).
                toolkit_versions=dict(config.toolkit_versions) or None,
                max_retries=1,
                logger=logging.getLogger("composio"),
            )
        except (ValueError, sdk_errors.ComposioError) as e:  # an unusable key or URL
            raise ConfigError(f"the Composio SDK refused it: {e}", key="composio") from None
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="composio")

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self._sdk.client.close)

    def version_for(self, toolkit: str, default: str) -> str:
        """The version a toolkit's tools run at: the config's pin, else `default`."""
        return self.versions.get(toolkit.lower(), default)

    async def _call(self, what: str, function: Callable[[], T]) -> T:
        from composio import exceptions as sdk_errors
        from composio_client import APIError, APIStatusError

        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                return await loop.run_in_executor(self._pool, _untracked, function)
        except TimeoutError:
            log.warning("Composio: %s took longer than %.0f s", what, self.timeout)
            raise ExternalToolUnavailable(
                strings.COMPOSIO_TIMED_OUT.format(seconds=self.timeout), retryable=True
            ) from None
        except APIStatusError as e:
            log.warning("Composio refused %s: %s", what, brief(e.message))  # "401 Invalid …"
            if e.status_code >= 500 or e.status_code in (408, 429):
                raise ExternalToolUnavailable(
                    strings.COMPOSIO_DOWN.format(message=brief(e.message)), retryable=True
                ) from None
            raise ExternalToolUnavailable(
                strings.COMPOSIO_REFUSED.format(message=brief(e.message)), retryable=False
            ) from None
        except APIError as e:  # no answer: connection refused, reset, timed out
            log.warning("Composio: %s failed: %s", what, e)
            # A connection never made sent nothing: the tool cannot have run.
            reached = not isinstance(e.__cause__, httpx.ConnectError)
            raise ExternalToolUnavailable(
                strings.COMPOSIO_UNREACHABLE, retryable=True, reached=reached
            ) from None
        except sdk_errors.ComposioError as e:
            log.warning("Composio: %s failed: %s", what, brief(str(e)))
            raise ExternalToolUnavailable(
                strings.COMPOSIO_ERROR.format(error=brief(str(e))), retryable=False
            ) from None

    # Connected accounts ------------------------------------------------------------------------

    def auth_config(self, toolkit: str) -> str:
        """The auth config `!connect TOOLKIT` uses; UserError naming the toolkits there are."""
        found = self.auth_configs.get(toolkit.lower())
        if found is None:
            toolkits = ", ".join(f"`{t}`" for t in sorted(self.auth_configs))
            raise UserError(
                strings.COMPOSIO_NO_TOOLKIT.format(
                    toolkit=toolkit, toolkits=toolkits or strings.COMPOSIO_NO_TOOLKITS
                )
            )
        return found

    async def link(self, user_id: str, toolkit: str) -> str:
        """A Composio Connect link for the person to link an account of `toolkit`."""
        auth_config = self.auth_config(toolkit)

        from composio import exceptions as sdk_errors

        def call() -> str | None:
            try:
                request = self._sdk.connected_accounts.link(user_id, auth_config)
            except sdk_errors.ComposioMultipleConnectedAccountsError:
                return None
            return request.redirect_url or ""

        url = await self._call("link", call)
        if url is None:
            raise UserError(strings.ALREADY_CONNECTED.format(toolkit=toolkit))
        if not url:
            raise UserError(strings.COMPOSIO_ERROR.format(error=strings.COMPOSIO_NO_LINK))
        return url

    async def accounts(
        self,
        user_id: str,
        toolkit: str | None = None,
        *,
        active_only: bool = False,
        account_id: str | None = None,
    ) -> list[Account]:
        """The person's connected accounts, newest first."""
        from composio_client import omit

        def call() -> list[Account]:
            found: list[Account] = []
            cursor: str | None = None
            for _ in range(MAX_PAGES):
                page = self._sdk.connected_accounts.list(
                    user_ids=[user_id],
                    toolkit_slugs=[toolkit.lower()] if toolkit else omit,
                    statuses=["ACTIVE"] if active_only else omit,
                    connected_account_ids=[account_id] if account_id else omit,
                    order_by="created_at",
                    order_direction="desc",
                    cursor=cursor or omit,
                    limit=100,
                )
                found += [
                    Account(
                        id=_text(item, "id"),
                        user_id=user_id,
                        toolkit=_text(item.toolkit, "slug").lower(),
                        status=_text(item, "status"),
                        created_at=_text(item, "created_at"),
                        auth_config_id=_text(item.auth_config, "id"),
                    )
                    for item in page.items
                ]
                cursor = page.next_cursor
                if not cursor:
                    break
            return found

        return await self._call("listing connected accounts", call)

    async def account_of(self, user_id: str, account_id: str) -> Account | None:
        """The person's connected account with this ID, or None if they have no such account."""
        found = await self.accounts(user_id, account_id=account_id)
        return next((a for a in found if a.id == account_id), None)

    async def delete(self, account_id: str) -> None:
        await self._call(
            "deleting a connected account",
            lambda: self._sdk.connected_accounts.delete(account_id),
        )

    # Tools -------------------------------------------------------------------------------------

    async def schemas(self, slugs: Sequence[str]) -> list[ToolSchema]:
        """The tools' schemas (GET /api/v3.1/tools?tool_slugs=…); unknown slugs are left out."""

        def call() -> list[ToolSchema]:
            raw = self._sdk.tools.get_raw_composio_tools(tools=list(slugs))
            return [
                ToolSchema(
                    slug=_text(tool, "slug"),
                    name=_text(tool, "name"),
                    description=_text(tool, "description"),
                    toolkit=_text(tool.toolkit, "slug").lower(),
                    version=_text(tool, "version"),
                    input_parameters=dict(tool.input_parameters or {}),
                )
                for tool in raw
            ]

        return await self._call("fetching tool schemas", call)

    async def execute(
        self, slug: str, arguments: dict[str, Any], *, user_id: str, account_id: str, version: str
    ) -> Execution:
        """Run a tool with this account, at a pinned toolkit version."""

        def call() -> Execution:
            result = self._sdk.tools.execute(
                slug,
                arguments,
                user_id=user_id,
                connected_account_id=account_id,
                version=version,
            )
            data = result.get("data")
            return Execution(
                successful=bool(result.get("successful")),
                data=dict(data) if isinstance(data, Mapping) else {"value": data},
                error=result.get("error") or None,
            )

        execution = await self._call(f"running {slug}", call)
        log.info(
            "ran %s (version %s) with account %s: %s",
            slug,
            version,
            account_id,
            "ok" if execution.successful else "unsuccessful",
        )
        return execution
