"""A real Letta server for the tests: PyPI letta 0.16.8 (the last REST server), installed by
scripts/install-letta into .venv-letta, run as a subprocess on 127.0.0.1 against

- a database of its own in the suite's embedded PostgreSQL 18 with pgvector (the session
  `postgres` fixture of tests/conftest.py), its tables made by tests/run_real_letta.py;
- a fake OpenAI-compatible model (tests/fakes/openai_server.py) that tests script; Letta sees it
  as the `openai-proxy/fake-model` chat model and embeds with `openai/text-embedding-3-small`
  through the same fake's /v1/embeddings.

Nothing leaves the machine: the fake is Letta's only provider, NLTK's download is switched off,
and HTTP(S)_PROXY points at a closed port so that anything else fails at once.

Fixtures (tests/conftest.py imports them, so every test can ask for them):

    async def test_it(real_letta: RealLetta, letta_llm: FakeOpenAI) -> None:
        letta_llm.script(Answer("Hello from the model"))
        client = AsyncLetta(base_url=real_letta.base_url, api_key="any")
        agent = await client.agents.create(model=real_letta.model, embedding=real_letta.embedding)
        ...

- `real_letta` (session scope): starts everything once for the whole run (about 15-30 s) and
  yields a `RealLetta`; stops the server and drops its database at the end. Agents persist
  between tests: give each test its own.
- `letta_llm` (function scope): the fake model of that server, with its script and recorded
  requests cleared before and after the test; fails the test if the server died meanwhile.

`start_letta()` is the same as an async context manager, for a test that needs a server of its
own (another fake, another database).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import aiohttp
import asyncpg
import pytest

from synapse_dev.server import free_port
from tests.fakes.openai_server import FakeOpenAI

ROOT = Path(__file__).resolve().parent.parent
LETTA_VENV = ROOT / ".venv-letta"
LETTA_PYTHON = LETTA_VENV / "bin" / "python"
LETTA_STAMP = LETTA_VENV / ".doryo-letta-installed"
SERVER_SCRIPT = ROOT / "tests" / "run_real_letta.py"

LETTA_MODEL = "fake-model"
"""The model the fake lists at /v1/models; Letta names it `openai-proxy/<model>`."""
LETTA_EMBEDDING = "openai/text-embedding-3-small"

START_TIMEOUT = 180.0
"""Seconds for schema + import + start-up (about 15 s with warm caches, 30 s on a cold one)."""
STOP_TIMEOUT = 15.0
LOG_TAIL = 60


@dataclass
class RealLetta:
    """A running Letta server."""

    base_url: str
    """What to give `Letta(base_url=...)` / `AsyncLetta(base_url=...)` (any api_key works)."""
    llm: FakeOpenAI
    """Letta's model: script it (`llm.script(Answer(...))`), read `llm.requests`."""
    model: str
    """The model handle for `agents.create(model=...)`: `openai-proxy/fake-model`."""
    embedding: str
    """The embedding handle for `agents.create(embedding=...)`."""
    database_url: str
    """Letta's database (asyncpg URL), to look at its tables."""
    log: Path
    """The server's stdout and stderr."""
    process: asyncio.subprocess.Process
    start_seconds: float
    """How long the server took to be ready (schema, import, start-up)."""

    def log_tail(self, lines: int = LOG_TAIL) -> str:
        return _tail(self.log, lines)

    @property
    def alive(self) -> bool:
        return self.process.returncode is None


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} is missing)"
    return "\n".join(text.splitlines()[-lines:])


def require_letta() -> None:
    """Fail (not skip: a skipped test cannot fail) when .venv-letta is not installed."""
    if not LETTA_PYTHON.exists() or not LETTA_STAMP.exists():
        pytest.fail(
            f"the real Letta server is not installed ({LETTA_VENV} is missing or incomplete): "
            "run scripts/install-letta (scripts/test does)",
            pytrace=False,
        )


def _server_env(workdir: Path, pg_uri: str, openai_base_url: str) -> dict[str, str]:
    """A clean environment: nothing of the developer's Letta, OpenAI or proxy settings leaks in."""
    home = workdir / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        key: value
        for key, value in os.environ.items()
        if key in {"PATH", "LANG", "LC_ALL", "TZ", "TMPDIR", "SSL_CERT_FILE"}
    }
    env.update(
        {
            "HOME": str(home),  # Letta writes ~/.letta (logs, tool sandbox dir)
            "LETTA_DIR": str(home / ".letta"),
            "LETTA_PG_URI": pg_uri,
            "OPENAI_BASE_URL": openai_base_url,
            "OPENAI_API_KEY": "sk-test-not-a-real-key",
            # Anything that tries the internet fails at once; loopback is exempt.
            "HTTP_PROXY": "http://127.0.0.1:9",
            "HTTPS_PROXY": "http://127.0.0.1:9",
            "NO_PROXY": "127.0.0.1,localhost",
            "LETTA_LOGGING_LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


async def _wait_ready(
    url: str, process: asyncio.subprocess.Process, log: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while True:
            if process.returncode is not None:
                pytest.fail(
                    f"the Letta server exited with {process.returncode} while starting; "
                    f"{log}:\n{_tail(log, LOG_TAIL)}",
                    pytrace=False,
                )
            try:
                async with session.get(f"{url}/v1/health/") as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the Letta server was not ready after {timeout:.0f} s; "
                    f"{log}:\n{_tail(log, LOG_TAIL)}",
                    pytrace=False,
                )
            await asyncio.sleep(0.25)


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()


def _socket_uri(admin_uri: str, database: str) -> tuple[str, str]:
    """(Letta's URI, an asyncpg URL) for `database` on the embedded server's Unix socket.

    Letta rebuilds its URI from the parts (user@host:port/db), dropping a user with no host:
    so a dummy host, which the `host` query parameter (the socket directory) overrides."""
    parsed = urlparse(admin_uri)
    socket_dir = parse_qs(parsed.query).get("host", [""])[0]
    user = parsed.username or "postgres"
    if not socket_dir:  # a TCP server
        netloc = parsed.netloc
        return f"postgresql://{netloc}/{database}", f"postgresql://{netloc}/{database}"
    return (
        f"postgresql://{user}@localhost:5432/{database}?host={socket_dir}",
        f"postgresql://{user}@/{database}?host={socket_dir}",
    )


@contextlib.asynccontextmanager
async def start_letta(
    workdir: Path, postgres_admin_uri: str, llm: FakeOpenAI, *, timeout: float = START_TIMEOUT
) -> AsyncIterator[RealLetta]:
    """A Letta server using a fresh database on `postgres_admin_uri` and `llm` as its model.

    `llm` must be running (and stay so): Letta lists its models once, at start-up."""
    require_letta()
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    database = f"letta_{uuid.uuid4().hex[:10]}"
    letta_uri, database_url = _socket_uri(postgres_admin_uri, database)
    admin = await asyncpg.connect(postgres_admin_uri)
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    port = free_port()
    log = workdir / "letta.log"
    started = time.monotonic()
    with log.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            str(LETTA_PYTHON),
            str(SERVER_SCRIPT),
            "--port",
            str(port),
            cwd=workdir,
            env=_server_env(workdir, letta_uri, llm.base_url),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # ^C in the terminal reaches pytest, which stops it
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        await _wait_ready(base_url, process, log, timeout)
        yield RealLetta(
            base_url=base_url,
            llm=llm,
            model=f"openai-proxy/{llm.models[0]}",
            embedding=LETTA_EMBEDDING,
            database_url=database_url,
            log=log,
            process=process,
            start_seconds=time.monotonic() - started,
        )
    finally:
        await _stop(process)
        admin = await asyncpg.connect(postgres_admin_uri)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture(scope="session")
async def real_letta(
    postgres: Any, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RealLetta]:
    """The real Letta server, started once per session; see the module's docstring."""
    require_letta()
    async with FakeOpenAI(models=[LETTA_MODEL]) as llm:
        workdir = tmp_path_factory.mktemp("letta")
        async with start_letta(workdir, postgres.get_uri(), llm) as server:
            print(f"Letta at {server.base_url} in {server.start_seconds:.1f} s; log {server.log}")
            yield server


@pytest.fixture
async def letta_llm(real_letta: RealLetta) -> AsyncIterator[FakeOpenAI]:
    """The real Letta's model, its script and requests cleared for this test."""
    real_letta.llm.clear()
    yield real_letta.llm
    real_letta.llm.clear()
    if not real_letta.alive:
        pytest.fail(
            f"the Letta server died during the test; {real_letta.log}:\n{real_letta.log_tail()}",
            pytrace=False,
        )
