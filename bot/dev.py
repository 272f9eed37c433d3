"""`doryo dev`: everything on one machine, state under data/, ready to log into from Element.

Starts (or reuses) Redis, a Synapse from synapse-dev/, the embedded PostgreSQL with pgvector and
the bot; registers a demo user with a direct chat with the bot; prints how to log in. Ctrl-C stops
what it started. A second run finds the same users, rooms and memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.core.config import load_config, write_config
from bot.core.errors import DoryoError
from synapse_dev.server import SynapseServer, free_port

log = logging.getLogger(__name__)

DEMO_USER = "demo"


async def _redis_answers(url: str) -> bool:
    redis = Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(await redis.ping())
    except (RedisError, OSError):
        return False
    finally:
        await redis.aclose()


def _install_redis() -> str:
    """The redis-server binary, installed with apt if it is missing (needs root)."""
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise DoryoError(
            "Redis is not running and redis-server is not installed: "
            "sudo apt-get install -y redis-server, then run doryo dev again"
        )
    print("installing redis-server with apt-get …", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    quiet = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT}
    if subprocess.run(["apt-get", "install", "-y", "redis-server"], **quiet).returncode:  # type: ignore[call-overload]
        subprocess.run(["apt-get", "update"], check=True, **quiet)  # type: ignore[call-overload]
        subprocess.run(["apt-get", "install", "-y", "redis-server"], check=True, **quiet)  # type: ignore[call-overload]
    found = shutil.which("redis-server")
    if not found:
        raise DoryoError("apt-get installed redis-server, but it is not on PATH")
    return found


async def _start_redis(data_dir: Path) -> tuple[str, asyncio.subprocess.Process]:
    binary = _install_redis()
    redis_dir = data_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    port = free_port(6380)
    process = await asyncio.create_subprocess_exec(
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(redis_dir),
        "--appendonly",
        "yes",
        "--save",
        "",
        "--logfile",
        str(redis_dir / "redis.log"),
        stdin=asyncio.subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        if await _redis_answers(url):
            return url, process
        await asyncio.sleep(0.05)
    process.kill()
    raise DoryoError(f"redis-server did not start; see {redis_dir / 'redis.log'}")


def _dev_overrides(data_dir: Path, hs_port: int, as_port: int, redis_url: str) -> dict[str, Any]:
    return {
        "homeserver": {"address": f"http://127.0.0.1:{hs_port}", "domain": "localhost"},
        "appservice": {"port": as_port},
        "database": {"url": "embedded"},
        "redis": {"url": redis_url},
        "data_dir": str(data_dir),
    }


def _prepare_config(data_dir: Path, redis_url: str) -> Path:
    """data/config.yaml: created once with fresh tokens; ports re-chosen at every start."""
    path = data_dir / "config.yaml"
    if path.exists():
        previous = load_config(path, environ={})
        hs_port = free_port(int(previous.homeserver.address.rsplit(":", 1)[1]))
        as_port = free_port(previous.appservice.port)
        tokens = {
            "as_token": previous.appservice.as_token.get_secret_value(),
            "hs_token": previous.appservice.hs_token.get_secret_value(),
        }
        # Kept: a new one would make the bot's stored keys unreadable.
        pickle_key = previous.encryption.pickle_key.get_secret_value()
        seed = previous.encryption.cross_signing_seed.get_secret_value()
    else:
        hs_port, as_port = free_port(8008), free_port(29333)
        tokens = {"as_token": secrets.token_urlsafe(32), "hs_token": secrets.token_urlsafe(32)}
        pickle_key = seed = ""
    overrides = _dev_overrides(data_dir, hs_port, as_port, redis_url)
    overrides["appservice"].update(tokens)
    # Element encrypts private rooms by default: so does the development bot.
    overrides["encryption"] = {
        "enabled": True,
        "pickle_key": pickle_key or secrets.token_urlsafe(32),
        "cross_signing_seed": seed or secrets.token_urlsafe(32),
    }
    write_config(path, overrides)
    return path


async def _demo_user(synapse: SynapseServer, data_dir: Path, bot_user_id: str) -> dict[str, str]:
    """The demo user's credentials, registered once, with a direct chat with the bot."""
    path = data_dir / "demo-user.json"
    if path.exists():
        saved: dict[str, str] = json.loads(path.read_text())
        return saved
    password = secrets.token_urlsafe(12)
    registered = await synapse.register_user(DEMO_USER, password)
    demo = {"user_id": registered["user_id"], "password": password}
    headers = {"Authorization": f"Bearer {registered['access_token']}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        body = {"is_direct": True, "invite": [bot_user_id], "preset": "trusted_private_chat"}
        async with session.post(
            f"{synapse.url}/_matrix/client/v3/createRoom", json=body
        ) as response:
            room_id = (await response.json())["room_id"]
        # Element finds direct chats through m.direct account data.
        account_data = (
            f"{synapse.url}/_matrix/client/v3/user/{demo['user_id']}/account_data/m.direct"
        )
        async with session.put(account_data, json={bot_user_id: [room_id]}):
            pass
    demo["dm_room_id"] = room_id
    path.write_text(json.dumps(demo, indent=2))
    path.chmod(0o600)
    return demo


def _banner(synapse: SynapseServer, demo: dict[str, str], bot_user_id: str) -> str:
    return f"""
  Doryo is running.

    Homeserver  {synapse.url}
    User        {demo["user_id"]}
    Password    {demo["password"]}

  Log in from Element (Desktop, or Element Web in a browser on this machine): choose
  "Sign in", edit the homeserver to {synapse.url}, and use the user and password above.
  A direct chat with {bot_user_id} is waiting: send !ping, then !help.

  State is kept in {synapse.data_dir.parent}. Ctrl-C stops everything.
"""


def _hold(data_dir: Path) -> contextlib.AbstractContextManager[Any]:
    """One `doryo dev` per data directory: a second one would share the first's database and
    rewrite its config (new ports: the first's clients would lose their homeserver). Released
    when the process ends, however it ends."""
    lock = open(data_dir / "dev.lock", "w")  # noqa: SIM115 - held for the whole run
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise DoryoError(
            f"another `doryo dev` is running on {data_dir}: stop it first (Ctrl-C), or give "
            "this one another --data-dir"
        ) from None
    return lock


async def run_dev(data_dir: Path, redis_url: str = "redis://127.0.0.1:6379/0") -> None:
    from bot.app import Doryo

    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    stack = contextlib.AsyncExitStack()
    stack.enter_context(_hold(data_dir))
    async with stack:
        if not await _redis_answers(redis_url):
            redis_url, redis_process = await _start_redis(data_dir)
            stack.push_async_callback(_stop_process, redis_process)
        config_path = _prepare_config(data_dir, redis_url)
        config = load_config(config_path)

        synapse = SynapseServer(
            data_dir / "synapse",
            registration=config.registration(),
            port=int(config.homeserver.address.rsplit(":", 1)[1]),
            server_name=config.homeserver.domain,
        )
        await synapse.start()
        stack.push_async_callback(synapse.stop)

        doryo = Doryo(config)
        await doryo.start()
        stack.push_async_callback(doryo.stop)
        await asyncio.wait_for(doryo.connected.wait(), timeout=60)

        demo = await _demo_user(synapse, data_dir, config.bot_user_id)
        print(_banner(synapse, demo, config.bot_user_id), flush=True)

        stopping = doryo.gave_up  # or a signal
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        await stopping.wait()
        print("stopping …", flush=True)
        if doryo.failure is not None:
            raise doryo.failure


async def _stop_process(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
