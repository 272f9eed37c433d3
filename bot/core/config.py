"""Configuration: config.yaml, updated onto config.example.yaml, overridden by the environment,
validated by pydantic.

Loading goes in that order:
1. the example is read with ruamel.yaml round-trip, so its comments survive;
2. keys renamed since an earlier version are moved to their new name in the user's file;
3. the user's values are copied onto the example (new keys appear with their comments; unknown
   keys are an error, with a suggestion); if that changed the file, it is written back;
4. DORYO_<SECTION>__<KEY> environment variables override values (never written to the file);
5. pydantic validates the result; every problem names its dotted key.
"""

from __future__ import annotations

import difflib
import io
import ipaddress
import logging
import os
import re
import secrets
from collections.abc import Mapping
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from appservice.registration import registration
from bot.core.errors import ConfigError

log = logging.getLogger(__name__)

PLACEHOLDER = "generate"
ENV_PREFIX = "DORYO_"

# Old dotted key → new dotted key. Values under an old name are moved, and the file rewritten.
RENAMED_KEYS: dict[str, str] = {
    # mautrix bridges spell these this way; people arrive from them.
    "appservice.bot_username": "appservice.bot_localpart",
    "appservice.bot_avatar_displayname": "appservice.bot_displayname",
    # Synapse's spelling of the server name.
    "homeserver.server_name": "homeserver.domain",
}

# Maps whose keys the user chooses: copied whole instead of being checked against the example.
FREE_FORM_KEYS = frozenset(
    {
        "llm.providers",
        "llm.aliases",
        "llm.prices",
        "composio.auth_configs",
        "composio.toolkit_versions",
    }
)

_URL = re.compile(r"^https?://[^\s/]+(/\S*)?$")
_LOCALPART = re.compile(r"^[a-z0-9._=/+-]+$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_url(value: str) -> str:
    if not _URL.match(value):
        raise ValueError(f"must be an http(s) URL, got {value!r}")
    return value.rstrip("/")


class HomeserverConfig(_Section):
    address: str
    domain: str = Field(min_length=1)
    request_timeout: float = Field(gt=0, le=300)

    _address = field_validator("address")(_check_url)


class AppserviceConfig(_Section):
    id: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    bot_localpart: str
    bot_displayname: str
    agent_localpart_prefix: str
    hostname: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    address: str
    as_token: SecretStr
    hs_token: SecretStr

    @field_validator("bot_localpart", "agent_localpart_prefix")
    @classmethod
    def _localpart(cls, value: str) -> str:
        if not _LOCALPART.match(value):
            raise ValueError(f"may only hold a-z, 0-9 and ._=/+- (got {value!r})")
        return value

    @field_validator("address")
    @classmethod
    def _optional_url(cls, value: str) -> str:
        return _check_url(value) if value else value

    @property
    def public_address(self) -> str:
        return self.address or f"http://{self.hostname}:{self.port}"


class DatabaseConfig(_Section):
    url: str
    min_connections: int = Field(ge=0, le=1000)
    max_connections: int = Field(ge=1, le=1000)
    command_timeout: float = Field(gt=0, le=86_400)
    """Seconds any one statement on the bot's pool may take (a database that hangs fails the
    event instead of holding it forever); index builds and a workspace's deletion are exempt."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value != "embedded" and not value.startswith(("postgres://", "postgresql://")):
            raise ValueError(f'must be "embedded" or a postgresql:// URL, got {value!r}')
        return value


class RedisConfig(_Section):
    url: SecretStr
    """May hold a password: a secret, never logged or shown (`where` says where it points)."""
    key_prefix: str

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("a redis://, rediss:// or unix:// URL")
        return value

    @property
    def where(self) -> str:
        """The URL without its user and password."""
        parts = urlsplit(self.url.get_secret_value())
        host = parts.hostname or ""
        return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


class BotConfig(_Section):
    ignore_users: list[str]
    max_command_age: float = Field(gt=0)
    max_parallel_rooms: int = Field(ge=1, le=10_000)
    backfill_messages: int = Field(ge=0, le=10_000)
    workspace_creators: list[str]
    admins: list[str]

    @field_validator("ignore_users", "workspace_creators", "admins")
    @classmethod
    def _regexes(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"{pattern!r} is not a regular expression: {e}") from None
        return value


class AgentConfig(_Section):
    context_tokens: int = Field(ge=200, le=1_000_000)
    memories: int = Field(ge=0, le=50)
    neighbours: int = Field(default=1, ge=0, le=5)
    edit_interval: float = Field(ge=0.1, le=10)
    tool_rounds: int = Field(ge=0, le=10)


class ActionsConfig(_Section):
    expiry_hours: float = Field(gt=0, le=24 * 365)
    run_timeout: float = Field(gt=0, le=3600)


class AdminApiConfig(_Section):
    token: SecretStr


class ProviderConfig(_Section):
    kind: Literal["openai", "anthropic"]
    base_url: str = ""
    api_key: SecretStr = SecretStr("")
    # None: local when base_url is a loopback or private address. Local providers cost 0 unless
    # llm.prices says otherwise, and prompts sent to them are never redacted.
    local: bool | None = None

    @field_validator("base_url")
    @classmethod
    def _optional_url(cls, value: str) -> str:
        return _check_url(value) if value else value


def _check_model_ref(value: str) -> str:
    """ "<provider>/<model>", or an alias of llm.aliases (a name without "/"), or empty."""
    if value.startswith("/") or value.endswith("/") or (value and not value.strip()):
        raise ValueError(f'must be "<provider>/<model>" or an alias, got {value!r}')
    return value


class LlmTimeoutsConfig(_Section):
    total: float = Field(default=120, gt=0, le=3600)
    first_token: float = Field(default=30, gt=0, le=3600)
    connect: float = Field(default=5, gt=0, le=300)


class LlmRetriesConfig(_Section):
    attempts: int = Field(default=2, ge=0, le=10)
    backoff: float = Field(default=0.5, ge=0, le=60)
    max_backoff: float = Field(default=8, ge=0, le=600)
    max_retry_after: float = Field(default=20, ge=0, le=3600)


class LlmCircuitBreakerConfig(_Section):
    failures: int = Field(default=5, ge=1, le=1000)
    cooldown: float = Field(default=30, gt=0, le=3600)


class RateLimitConfig(_Section):
    requests_per_minute: int = Field(default=0, ge=0, le=1_000_000)
    tokens_per_minute: int = Field(default=0, ge=0, le=1_000_000_000)


class LlmRateLimitsConfig(_Section):
    agent: RateLimitConfig = RateLimitConfig(requests_per_minute=30, tokens_per_minute=200_000)
    workspace: RateLimitConfig = RateLimitConfig(requests_per_minute=60, tokens_per_minute=400_000)
    user: RateLimitConfig = RateLimitConfig(requests_per_minute=20, tokens_per_minute=100_000)


class LlmBudgetsConfig(_Section):
    workspace_monthly_usd: Decimal = Field(default=Decimal(0), ge=0, le=10_000_000)
    agent_monthly_usd: Decimal = Field(default=Decimal(0), ge=0, le=10_000_000)
    at_limit: Literal["refuse", "downgrade"] = "refuse"
    downgrade_model: str = ""
    refresh_seconds: float = Field(default=5, ge=0, le=3600)

    _downgrade_model = field_validator("downgrade_model")(_check_model_ref)


class LlmPriceConfig(_Section):
    """USD per million tokens."""

    input: Decimal = Field(ge=0)
    output: Decimal = Field(ge=0)
    cached_input: Decimal | None = Field(default=None, ge=0)


class LlmRedactionConfig(_Section):
    enabled: bool = False
    emails: bool = True
    phone_numbers: bool = True


def _provider_named(ref: str, info: ValidationInfo) -> None:
    """A model reference's provider must be configured (providers is validated first)."""
    providers = info.data.get("providers")
    if not ref or providers is None:
        return
    if "/" not in ref:
        return  # an alias: the router checks that it is defined
    provider = ref.split("/", 1)[0]
    if provider not in providers:
        known = ", ".join(sorted(providers)) or "none"
        raise ValueError(f"{ref!r} names no provider {provider!r} (llm.providers has: {known})")


class LlmConfig(_Section):
    providers: dict[str, ProviderConfig]
    default_model: str
    fallbacks: list[str]
    aliases: dict[str, str] = Field(default_factory=dict)
    timeouts: LlmTimeoutsConfig = LlmTimeoutsConfig()
    retries: LlmRetriesConfig = LlmRetriesConfig()
    circuit_breaker: LlmCircuitBreakerConfig = LlmCircuitBreakerConfig()
    rate_limits: LlmRateLimitsConfig = LlmRateLimitsConfig()
    budgets: LlmBudgetsConfig = LlmBudgetsConfig()
    prices: dict[str, LlmPriceConfig] = Field(default_factory=dict)
    redaction: LlmRedactionConfig = LlmRedactionConfig()
    max_parallel_calls: int = Field(default=16, ge=1, le=10_000)

    @field_validator("default_model")
    @classmethod
    def _model_ref(cls, value: str, info: ValidationInfo) -> str:
        if value and "/" not in value:
            raise ValueError(f'must be "<provider>/<model>", got {value!r}')
        _provider_named(value, info)
        return value

    @field_validator("fallbacks")
    @classmethod
    def _fallback_refs(cls, value: list[str], info: ValidationInfo) -> list[str]:
        for ref in value:
            if not ref:
                raise ValueError("must not hold empty model references")
            _check_model_ref(ref)
            _provider_named(ref, info)
        return value

    @field_validator("aliases")
    @classmethod
    def _alias_refs(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        for alias, ref in value.items():
            if "/" in alias or not alias.strip():
                raise ValueError(f"alias {alias!r}: must be a name without '/'")
            if not ref or "/" not in ref:
                raise ValueError(f'alias {alias!r}: must be "<provider>/<model>", got {ref!r}')
            _check_model_ref(ref)
            _provider_named(ref, info)
        return value

    @field_validator("budgets")
    @classmethod
    def _downgrade_ref(cls, value: LlmBudgetsConfig, info: ValidationInfo) -> LlmBudgetsConfig:
        _provider_named(value.downgrade_model, info)
        return value

    @field_validator("prices")
    @classmethod
    def _price_refs(cls, value: dict[str, LlmPriceConfig]) -> dict[str, LlmPriceConfig]:
        for ref in value:
            if "/" not in ref:
                raise ValueError(f'keys are "<provider>/<model>" or "<provider>/*", got {ref!r}')
        return value


class EmbeddingsConfig(_Section):
    # "local/<built-in model>" runs in this process; "<provider>/<model>" calls the
    # OpenAI-compatible embeddings endpoint of that llm.providers entry.
    model: str = Field(pattern=r"^[^/\s]+/\S+$")
    # Ask the model for vectors of this size (OpenAI text-embedding-3 can shorten); 0: its own.
    dimensions: int = Field(default=0, ge=0, le=16_000)
    batch_size: int = Field(default=64, ge=1, le=2048)
    timeout: float = Field(default=30, gt=0, le=600)
    # What a local model computes in; auto: bfloat16 where the CPU has it in hardware.
    local_precision: Literal["auto", "float32", "bfloat16"] = "auto"
    # A local/ model served by `doryo run --role embedder` at this URL instead of in this process.
    local_url: str = Field(default="", pattern=r"^(https?://\S+)?$")


class MemoryConfig(_Section):
    retention_days: int = Field(default=0, ge=0, le=36_500)
    retention_mode: Literal["compact", "delete"] = "compact"
    redact_emails: bool = False
    redact_phone_numbers: bool = False
    keep_answers: bool = False
    chunk_words: int = Field(default=160, ge=20, le=4000)
    index_batch_size: int = Field(default=64, ge=1, le=4096)
    index_batch_wait: float = Field(default=0.1, ge=0, le=60)
    index_queue_size: int = Field(default=10_000, ge=1, le=10_000_000)
    candidates: int = Field(default=40, ge=1, le=1000)
    rrf_k: int = Field(default=60, ge=1, le=10_000)
    vector_weight: float = Field(default=1.0, ge=0, le=100)
    fulltext_weight: float = Field(default=1.0, ge=0, le=100)
    speaker_weight: float = Field(default=2.0, ge=0, le=100)
    ef_search: int = Field(default=400, ge=1, le=1000)
    exact_search_below: int = Field(default=4_000, ge=0, le=10_000_000)
    fulltext_max_matches: int = Field(default=200, ge=1, le=1_000_000)
    fulltext_min_match: float = Field(default=0.5, ge=0, le=1)
    fetch_links: bool = False
    """Read the web pages people's messages link to into memory (bot.documents.links)."""


class DocumentsConfig(_Section):
    enabled: bool = True
    max_bytes: int = Field(default=25_000_000, ge=1_000, le=2_000_000_000)
    max_pages: int = Field(default=500, ge=1, le=100_000)
    max_chars: int = Field(default=2_000_000, ge=1_000, le=200_000_000)
    read_timeout: float = Field(default=120, gt=0, le=3600)
    progress_pages: int = Field(default=20, ge=1, le=100_000)
    link_max_bytes: int = Field(default=2_000_000, ge=1_000, le=100_000_000)
    link_timeout: float = Field(default=10, gt=0, le=120)
    unsafe_links_to_loopback: bool = False
    """For tests only: links to 127.0.0.1 are fetched (never private or other addresses)."""


_TOOLKIT = re.compile(r"^[a-z0-9_]{1,64}$")


class ComposioConfig(_Section):
    api_key: SecretStr
    base_url: str
    timeout: float = Field(default=30, gt=0, le=600)
    auth_configs: dict[str, str] = Field(default_factory=dict)
    """Toolkit slug (lower case) → the Composio auth config ID that `!connect TOOLKIT` uses."""
    toolkit_versions: dict[str, str] = Field(default_factory=dict)
    """Toolkit slug → the pinned toolkit version its tools run at (overrides the built-in pins)."""

    @field_validator("base_url")
    @classmethod
    def _optional_url(cls, value: str) -> str:
        if not value:
            return value
        value = _check_url(value)
        # The SDK sends the API key only over HTTPS, or plain HTTP to a loopback address.
        host = (urlsplit(value).hostname or "").lower()
        if value.startswith("http://") and not _is_loopback(host):
            raise ValueError(
                f"must be https:// (http:// only for a loopback address), got {value!r}"
            )
        return value

    @field_validator("api_key")
    @classmethod
    def _sendable_key(cls, value: SecretStr) -> SecretStr:
        key = value.get_secret_value()
        if key and (key != key.strip() or not key.isprintable() or not key.isascii()):
            raise ValueError("must be the API key alone, without spaces or line breaks")
        return value

    @field_validator("auth_configs", "toolkit_versions")
    @classmethod
    def _toolkit_keys(cls, value: dict[str, str]) -> dict[str, str]:
        cleaned = {}
        for toolkit, setting in value.items():
            key = str(toolkit).lower()
            if not _TOOLKIT.match(key):
                raise ValueError(f"{toolkit!r} is not a toolkit slug (a-z, 0-9 and _)")
            if not isinstance(setting, str) or not setting.strip():
                raise ValueError(f"{toolkit}: must be a non-empty string")
            if setting.strip().lower() == "latest":
                raise ValueError(f"{toolkit}: pin a version (like 20250909_00), not latest")
            cleaned[key] = setting.strip()
        return cleaned


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class LettaConfig(_Section):
    base_url: str
    api_key: SecretStr
    model: str = ""
    """The Letta model handle new agents use; "" = the server's default."""
    embedding: str = ""
    """The Letta embedding handle new agents use; "" = the server's default."""
    timeout: float = Field(default=120, gt=0, le=3600)
    fallback_to_native: bool = True
    """Letta unreachable: the built-in agent answers (the room is told either way)."""

    @property
    def enabled(self) -> bool:
        return bool(self.base_url)

    @field_validator("base_url")
    @classmethod
    def _optional_url(cls, value: str) -> str:
        return _check_url(value) if value else value


class EncryptionConfig(_Section):
    enabled: bool = False
    pickle_key: SecretStr = SecretStr("")
    """Encrypts the bot's Olm and Megolm keys at rest in the database."""
    cross_signing_seed: SecretStr = SecretStr("")
    """The bot's cross-signing keys are derived from it; empty: its device is not
    cross-signed."""
    key_wait: float = Field(default=10, ge=0, le=300)
    """Seconds a message waits for its room key before its sender is told it cannot be read."""
    device_url: str = Field(default="", pattern=r"^(https?://\S+)?$")
    """Where a worker reaches the process that owns the bot's device (the receiver, or the
    `all` process); empty: appservice.address, where the homeserver reaches the receiver."""

    @model_validator(mode="after")
    def _pickle_key_when_enabled(self) -> EncryptionConfig:
        if self.enabled and len(self.pickle_key.get_secret_value()) < 16:
            raise ValueError(
                "pickle_key: at least 16 characters when encryption is enabled (it encrypts "
                "the bot's keys at rest; set it once and keep it)"
            )
        seed = self.cross_signing_seed.get_secret_value()
        if seed and len(seed) < 32:
            raise ValueError("cross_signing_seed: at least 32 characters, or empty")
        return self


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"]
    format: Literal["text", "json"]


class Config(_Section):
    homeserver: HomeserverConfig
    appservice: AppserviceConfig
    database: DatabaseConfig
    redis: RedisConfig
    bot: BotConfig
    admin_api: AdminApiConfig
    agent: AgentConfig
    actions: ActionsConfig
    llm: LlmConfig
    embeddings: EmbeddingsConfig
    memory: MemoryConfig = MemoryConfig()
    documents: DocumentsConfig = DocumentsConfig()
    composio: ComposioConfig
    letta: LettaConfig
    encryption: EncryptionConfig = EncryptionConfig()
    logging: LoggingConfig
    data_dir: Path

    @property
    def bot_user_id(self) -> str:
        return f"@{self.appservice.bot_localpart}:{self.homeserver.domain}"

    def registration(self) -> dict[str, Any]:
        """The appservice registration the homeserver must load for this config."""
        return registration(
            appservice_id=self.appservice.id,
            url=self.appservice.public_address,
            as_token=self.appservice.as_token.get_secret_value(),
            hs_token=self.appservice.hs_token.get_secret_value(),
            sender_localpart=self.appservice.bot_localpart,
            user_regex=self.user_namespace_regex,
        )

    @property
    def user_namespace_regex(self) -> str:
        """Every user ID the appservice owns: the bot and its agent users."""
        domain = re.escape(self.homeserver.domain)
        bot = re.escape(self.appservice.bot_localpart)
        agents = re.escape(self.appservice.agent_localpart_prefix)
        return f"^@({bot}|{agents}.+):{domain}$"


def example_path() -> Path:
    """config.example.yaml: the checkout's own, else the copy a wheel carries (through the
    bot/config.example.yaml symlink)."""
    checkout = Path(__file__).resolve().parents[2] / "config.example.yaml"
    if checkout.is_file():
        return checkout
    return Path(str(resources.files("bot") / "config.example.yaml"))


def _yaml() -> YAML:
    yaml = YAML()  # round-trip: keeps comments and key order
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 99
    return yaml


def _read_yaml(path: Path) -> CommentedMap:
    try:
        with path.open(encoding="utf-8") as f:
            data = _yaml().load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist (copy config.example.yaml to start)") from None
    except YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if data is None:
        return CommentedMap()
    if not isinstance(data, CommentedMap):
        raise ConfigError(f"{path} must hold a mapping of sections at the top level")
    return data


def _dump_yaml(data: Any) -> str:
    out = io.StringIO()
    _yaml().dump(data, out)
    return out.getvalue()


def _pop_path(data: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    *parents, leaf = dotted.split(".")
    node: Any = data
    for part in parents:
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    if not isinstance(node, dict) or leaf not in node:
        return False, None
    return True, node.pop(leaf)


def _set_path(data: dict[str, Any], dotted: str, value: Any, *, overwrite: bool) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = CommentedMap()
            node[part] = child
        node = child
    if overwrite or leaf not in node:
        node[leaf] = value


def migrate_renamed_keys(user: dict[str, Any]) -> list[str]:
    """Move values from renamed keys to their new names. Returns what moved, for the log."""
    moved = []
    for old, new in RENAMED_KEYS.items():
        found, value = _pop_path(user, old)
        if found:
            _set_path(user, new, value, overwrite=False)
            moved.append(f"{old} → {new}")
    return moved


def _merge_onto(example: CommentedMap, user: Mapping[str, Any], prefix: str) -> list[str]:
    """Copy the user's values onto the example in place. Returns unknown dotted keys."""
    unknown = []
    for key, value in user.items():
        dotted = f"{prefix}{key}"
        if key not in example:
            unknown.append(dotted)
            continue
        template = example[key]
        if (
            isinstance(template, CommentedMap)
            and isinstance(value, Mapping)
            and dotted not in FREE_FORM_KEYS
        ):
            unknown += _merge_onto(template, value, f"{dotted}.")
        else:
            # A wrong type (a list where a section belongs) lands here and pydantic names it.
            example[key] = value
    return unknown


def _known_keys(example: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in example.items():
        dotted = f"{prefix}{key}"
        keys.append(dotted)
        if isinstance(value, Mapping) and dotted not in FREE_FORM_KEYS:
            keys += _known_keys(value, f"{dotted}.")
    return keys


def _unknown_keys_error(unknown: list[str], example: Mapping[str, Any]) -> ConfigError:
    known = _known_keys(example)
    lines = []
    for key in unknown:
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        lines.append(f"{key}: unknown key{hint}")
    return ConfigError("\n".join(lines), key=None)


def update_onto_example(user: CommentedMap) -> CommentedMap:
    """The example, with the user's values (renamed keys moved) copied onto it."""
    example = _read_yaml(example_path())
    moved = migrate_renamed_keys(user)
    for change in moved:
        log.warning("config key renamed: %s", change)
    unknown = _merge_onto(example, user, "")
    if unknown:
        raise _unknown_keys_error(unknown, example)
    return example


def _env_overrides(environ: Mapping[str, str], sections: Mapping[str, Any]) -> dict[str, Any]:
    """DORYO_SECTION__KEY=value pairs, parsed as YAML scalars, as a nested dict."""
    overrides: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        if path[0] not in sections:
            continue  # DORYO_* variables that are not config (used by scripts) are left alone.
        try:
            value = YAML(typ="safe").load(raw) if raw else ""
        except YAMLError:
            value = raw
        if isinstance(value, (dict, list)) or value is None:
            value = raw  # a secret that happens to look like YAML stays a string
        _set_path(overrides, ".".join(path), value, overwrite=True)
    return overrides


def _deep_update(target: dict[str, Any], source: Mapping[str, Any]) -> None:
    for key, value in source.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = value


def _plain(data: Any) -> Any:
    """ruamel's commented containers as plain dicts and lists."""
    if isinstance(data, Mapping):
        return {str(k): _plain(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_plain(v) for v in data]
    return data


def validate(data: Mapping[str, Any], *, allow_placeholders: bool = False) -> Config:
    """Validate a merged config mapping. Raises ConfigError naming every bad key."""
    try:
        config = Config.model_validate(_plain(data))
    except ValidationError as e:
        problems = []
        first_key = None
        for error in e.errors():
            key = ".".join(str(p) for p in error["loc"])
            first_key = first_key or key
            message = error["msg"]
            if error["type"] == "missing":
                message = "missing"
            elif error["type"] == "extra_forbidden":
                message = "unknown key"
            problems.append(f"{key}: {message}")
        raise ConfigError("\n".join(problems), key=None) from None
    if not allow_placeholders:
        for key, secret in (
            ("appservice.as_token", config.appservice.as_token),
            ("appservice.hs_token", config.appservice.hs_token),
        ):
            if secret.get_secret_value() in (PLACEHOLDER, ""):
                raise ConfigError(
                    'still the example placeholder; run "doryo registration" to generate '
                    "the tokens and the registration file",
                    key=key,
                )
    return config


def load_config(
    path: Path,
    *,
    environ: Mapping[str, str] | None = None,
    write_back: bool = True,
    allow_placeholders: bool = False,
) -> Config:
    """Load, update, override and validate config.yaml (see the module docstring)."""
    user = _read_yaml(path)
    original = _dump_yaml(user)
    merged = update_onto_example(user)
    updated = _dump_yaml(merged)
    if write_back and updated != original:
        try:
            path.write_text(updated, encoding="utf-8")
            log.info("updated %s onto the example (new or renamed keys)", path)
        except OSError as e:
            log.warning("could not write the updated config to %s: %s", path, e)
    data = _plain(merged)
    _deep_update(data, _env_overrides(os.environ if environ is None else environ, data))
    return validate(data, allow_placeholders=allow_placeholders)


def config_from_overrides(overrides: Mapping[str, Any]) -> Config:
    """The example's defaults with `overrides` applied: for `doryo dev` and the tests."""
    data = _plain(_read_yaml(example_path()))
    _deep_update(data, overrides)
    return validate(data)


def generate_tokens(path: Path) -> bool:
    """Replace placeholder tokens in the config file with random ones. True if it changed."""
    user = update_onto_example(_read_yaml(path))
    changed = False
    for key in ("as_token", "hs_token"):
        if user["appservice"][key] in (PLACEHOLDER, "", None):
            user["appservice"][key] = secrets.token_urlsafe(32)
            changed = True
    if changed:
        path.write_text(_dump_yaml(user), encoding="utf-8")
    return changed


def write_config(path: Path, overrides: Mapping[str, Any]) -> None:
    """Write a commented config file: the example with `overrides` applied."""
    example = _read_yaml(example_path())
    unknown = _merge_onto(example, overrides, "")
    if unknown:
        raise _unknown_keys_error(unknown, example)
    path.write_text(_dump_yaml(example), encoding="utf-8")
