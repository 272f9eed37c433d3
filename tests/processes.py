"""Doryo's processes for tests and benchmarks: each a real `python -m bot run --role …`,
started, watched through /ready and /metrics, killed or stopped (docs/deployment.md)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bot.core.config import load_config, write_config
from synapse_dev.server import free_port


@dataclass
class Deployment:
    """The processes of one Doryo deployment, started and stopped by the test."""

    config: Path
    logs: Path
    database_url: str
    bot_id: str
    admin_token: str
    processes: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)

    async def start(self, name: str, role: str, port: int | None = None) -> None:
        """Start a process of this role, and wait until it is ready."""
        port = port or free_port()
        args = ["-m", "bot", "run", "-c", str(self.config), "--role", role, "--port", str(port)]
        with (self.logs / f"{name}.log").open("ab") as log_file:
            self.processes[name] = await asyncio.create_subprocess_exec(
                sys.executable,
                *args,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
            )
        self.ports[name] = port
        self.roles[name] = role
        await self.ready(name)

    async def restart_exited(self) -> list[str]:
        """Start again, with its role and port, every process that has exited (one a test
        killed); wait until all are ready. The names of those restarted."""
        exited = [name for name, p in self.processes.items() if p.returncode is not None]
        for name in exited:
            await self.start(name, self.roles[name], self.ports[name])
        for name in self.processes:
            await self.ready(name)
        return exited

    async def ready(self, name: str, timeout: float = 90) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        async with aiohttp.ClientSession(headers=headers) as session, asyncio.timeout(timeout):
            while True:
                if self.processes[name].returncode is not None:
                    raise AssertionError(f"{name} exited: {self.log(name)[-3000:]}")
                try:
                    url = f"http://127.0.0.1:{self.ports[name]}/ready"
                    async with session.get(url) as response:
                        if response.status == 200:
                            body: dict[str, Any] = await response.json()
                            return body
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)

    async def _metrics_text(self, name: str) -> str:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{self.ports[name]}/metrics") as response,
        ):
            return await response.text()

    async def metric(self, name: str, metric: str) -> float:
        """A metric's value (summed over its labels) from the process's /metrics."""
        text = await self._metrics_text(name)
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(metric) and not line.startswith("#")
        )

    async def metrics(self, name: str, family: str) -> dict[str, float]:
        """A metric family's unlabelled samples by suffix ("_sum", "_count", "" …)."""
        text = await self._metrics_text(name)
        found: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith(family) and "{" not in line:
                key, value = line.rsplit(" ", 1)
                found[key[len(family) :]] = float(value)
        return found

    async def by_label(self, name: str, metric: str) -> dict[str, float]:
        """A metric's samples with one label, by that label's value."""
        text = await self._metrics_text(name)
        found: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith(metric + "{"):
                labels, value = line.rsplit(" ", 1)
                found[labels.split('"')[1]] = float(value)
        return found

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def kill(self, name: str) -> None:
        os.kill(self.processes[name].pid, signal.SIGKILL)

    async def stop_one(self, name: str) -> int | None:
        """Stop a process as its supervisor would (SIGTERM), and forget it."""
        process = self.processes.pop(name)
        self.ports.pop(name)
        self.roles.pop(name)
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
        return process.returncode

    async def stop_and_check(self) -> None:
        """Stop every process; each must have exited cleanly, or by a test's SIGKILL."""
        codes = await self.stop()
        for name, code in codes.items():
            assert code in (0, -signal.SIGKILL), f"{name}: {self.log(name)[-3000:]}"

    @contextlib.asynccontextmanager
    async def whole(self) -> AsyncIterator[Deployment]:
        """For one test: what an earlier test killed is started again and every process is
        ready; afterwards, a process that died without the test killing it fails that test,
        not the next one."""
        restarted = await self.restart_exited()
        if restarted:
            print(f"started again after the last test: {', '.join(restarted)}")
        yield self
        for name, process in self.processes.items():
            code = process.returncode
            assert code in (None, -signal.SIGKILL), f"{name}: {self.log(name)[-3000:]}"

    async def stop(self) -> dict[str, int | None]:
        for process in self.processes.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        codes = {}
        for name, process in self.processes.items():
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
            codes[name] = process.returncode
        return codes


def deployment(
    data_dir: Path,
    *,
    homeserver: Any,
    database_url: str,
    redis_url: str,
    model_url: str,
    embedder_port: int,
    **sections: dict[str, Any],
) -> Deployment:
    """Write the config every process of a deployment reads — the local embedding model in the
    embedder only, the others asking it — and the Deployment that starts them. `homeserver`: a
    tests.conftest.Homeserver; `sections`: more config, merged in."""
    admin_token = secrets.token_urlsafe(16)
    overrides: dict[str, Any] = {
        "homeserver": {"address": homeserver.url, "domain": "localhost"},
        "appservice": {
            "port": homeserver.as_port,
            "as_token": homeserver.as_token,
            "hs_token": homeserver.hs_token,
        },
        "database": {"url": database_url},
        "redis": {"url": redis_url, "key_prefix": f"d{secrets.token_hex(4)}:"},
        "llm": {"providers": {"local": {"kind": "openai", "base_url": model_url, "api_key": ""}}},
        "embeddings": {
            "model": "local/all-minilm-l6-v2",
            "local_url": f"http://127.0.0.1:{embedder_port}",
        },
        "admin_api": {"token": admin_token},
        "data_dir": str(data_dir),
    }
    for section, values in sections.items():
        overrides.setdefault(section, {}).update(values)
    config = data_dir / "config.yaml"
    write_config(config, overrides)
    bot_id = load_config(config).bot_user_id
    return Deployment(config, data_dir, database_url, bot_id, admin_token)
