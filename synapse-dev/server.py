"""A local Synapse for development and tests: fill in the config, start, stop, register users.

Everything lives in one directory: homeserver.yaml, secrets, signing key, SQLite database (or
":memory:" for tests; or a PostgreSQL database elsewhere, as production Synapse uses), log.
Secrets are generated once and kept, so a restarted `doryo dev` finds its users and rooms again.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import signal
import socket
import sys
import time
from pathlib import Path
from string import Template
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

# Next to this file in a checkout and in an installed wheel (package data).
_TEMPLATES = Path(__file__).parent


_ENCRYPTION_EXTENSIONS = """\
# End-to-end encryption for appservices (docs/encryption.md): to-device messages (MSC2409),
# device lists and one-time key counts (MSC3202) in transactions.
experimental_features:
  msc2409_to_device_messages_enabled: true
  msc3202_transaction_extensions: true
"""


def free_port(preferred: int | None = None) -> int:
    """`preferred` if nothing listens there on 127.0.0.1, else a port the OS picks."""
    if preferred:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", preferred))
                return preferred
            except OSError:
                pass
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def postgres_database_sql(name: str) -> str:
    """The statement that makes a database Synapse accepts (it refuses other collations)."""
    return (
        f"CREATE DATABASE \"{name}\" ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' "
        "TEMPLATE template0"
    )


class SynapseServer:
    def __init__(
        self,
        data_dir: Path,
        *,
        registration: dict[str, Any],
        port: int | None = None,
        server_name: str = "localhost",
        in_memory: bool = False,
        postgres: dict[str, Any] | None = None,
        log_level: str = "WARNING",
        extra_config: dict[str, Any] | None = None,
        encryption_extensions: bool = True,
    ) -> None:
        """`extra_config`: top-level homeserver.yaml keys added to the template's (tests: e.g.
        encryption_enabled_by_default_for_room_type). `encryption_extensions`: send the
        appservice what end-to-end encryption needs (off only to test a homeserver without).
        `postgres`: psycopg2's connection arguments (host, port, user, password, dbname) of an
        empty database made with C collation and UTF8 (`postgres_database_sql`), instead of
        SQLite."""
        self.data_dir = data_dir.resolve()
        self.registration = registration
        self.port = port or free_port()
        self.server_name = server_name
        self.in_memory = in_memory
        self.postgres = postgres
        self.log_level = log_level
        self.extra_config = extra_config or {}
        self.encryption_extensions = encryption_extensions
        self._process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "homeserver.yaml"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "homeserver.log"

    def _secrets(self) -> dict[str, str]:
        path = self.data_dir / "secrets.json"
        if path.exists():
            stored: dict[str, str] = json.loads(path.read_text())
            return stored
        generated = {
            key: secrets.token_urlsafe(32)
            for key in ("registration_shared_secret", "macaroon_secret_key", "form_secret")
        }
        path.write_text(json.dumps(generated))
        path.chmod(0o600)
        return generated

    @property
    def shared_secret(self) -> str:
        return self._secrets()["registration_shared_secret"]

    def write_config(self) -> Path:
        """Write homeserver.yaml, its log config and the appservice registration."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        registration_path = self.data_dir / "appservice-registration.yaml"
        # JSON is YAML too, and needs no YAML library here.
        registration_path.write_text(json.dumps(self.registration, indent=2))
        values = {
            "server_name": self.server_name,
            "port": str(self.port),
            "data_dir": str(self.data_dir),
            "database": self._database(),
            "registration": str(registration_path),
            "log_level": self.log_level,
            "experimental_features": _ENCRYPTION_EXTENSIONS if self.encryption_extensions else "",
            **self._secrets(),
        }
        for name, target in (
            ("homeserver.yaml.template", self.config_path),
            ("log.config.template", self.data_dir / "log.config"),
        ):
            template = Template((_TEMPLATES / name).read_text(encoding="utf-8"))
            target.write_text(template.substitute(values), encoding="utf-8")
        if self.extra_config:
            with self.config_path.open("a", encoding="utf-8") as config:
                for key, value in self.extra_config.items():
                    config.write(f"{key}: {json.dumps(value)}\n")  # JSON is YAML
        return self.config_path

    def _database(self) -> str:
        """The `database:` section's body, indented."""
        if self.postgres:
            args = {"cp_min": 2, "cp_max": 10, **self.postgres}
            return f"  name: psycopg2\n  args: {json.dumps(args)}"  # JSON is YAML
        path = ":memory:" if self.in_memory else str(self.data_dir / "homeserver.db")
        return f"  name: sqlite3\n  args:\n    database: {json.dumps(path)}"

    async def start(self, timeout: float = 60) -> None:
        """Start Synapse and wait until its client API answers."""
        if self._process is not None:
            raise RuntimeError("Synapse is already running")
        self.write_config()
        with self.log_path.open("ab") as log_file:
            log_file.write(f"\n--- starting at {time.ctime()} on port {self.port}\n".encode())
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "synapse.app.homeserver",
                "-c",
                str(self.config_path),
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
                cwd=self.data_dir,
            )
        try:
            await self._wait_ready(timeout)
        except BaseException:
            await self.stop()
            raise
        log.info("Synapse is up at %s (data in %s)", self.url, self.data_dir)

    async def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                assert self._process is not None
                if self._process.returncode is not None:
                    raise RuntimeError(
                        f"Synapse exited with code {self._process.returncode}; "
                        f"see {self.log_path}:\n{self._log_tail()}"
                    )
                try:
                    async with session.get(f"{self.url}/_matrix/client/versions") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise TimeoutError(f"Synapse did not answer within {timeout} s; see {self.log_path}")

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self, timeout: float = 15) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            log.warning("Synapse did not stop within %s s; killing it", timeout)
            process.kill()
            await process.wait()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def register_user(
        self, localpart: str, password: str, *, admin: bool = False
    ) -> dict[str, Any]:
        """Register a user with the shared secret. Returns Synapse's answer (with access_token).

        An existing user raises ValueError with errcode M_USER_IN_USE in its text.
        """
        url = f"{self.url}/_synapse/admin/v1/register"
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as response:
                nonce = (await response.json())["nonce"]
            message = "\x00".join([nonce, localpart, password, "admin" if admin else "notadmin"])
            mac = hmac.new(self.shared_secret.encode(), message.encode(), hashlib.sha1)
            body = {
                "nonce": nonce,
                "username": localpart,
                "password": password,
                "admin": admin,
                "mac": mac.hexdigest(),
            }
            async with session.post(url, json=body) as response:
                result: dict[str, Any] = await response.json()
                if response.status != 200:
                    raise ValueError(f"{result.get('errcode')}: {result.get('error')}")
                return result
