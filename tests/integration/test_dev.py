"""`doryo dev` as a newcomer runs it: it ends with a Synapse to log into and a bot that answers
!ping; Ctrl-C stops everything it started; a second run finds the same user and chat."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import aiohttp
import psutil
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.core.config import load_config
from synapse_dev.server import free_port
from tests.client import MatrixClient
from tests.poll import eventually


async def start_dev(
    data_dir: Path, redis_url: str
) -> tuple[asyncio.subprocess.Process, dict[str, str]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "dev",
        "--data-dir",
        str(data_dir),
        "--redis-url",
        redis_url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    output = ""
    async with asyncio.timeout(120):
        while "Ctrl-C stops everything" not in output:
            line = await process.stdout.readline()
            if not line:
                raise AssertionError(f"doryo dev exited early:\n{output}")
            output += line.decode()
    asyncio.get_running_loop().create_task(process.stdout.read())  # keep the pipe drained
    found = {
        key: re.search(rf"{label}\s+(\S+)", output)[1]  # type: ignore[index]
        for key, label in (("url", "Homeserver"), ("user", "User"), ("password", "Password"))
    }
    return process, found


async def log_in(url: str, user: str, password: str) -> MatrixClient:
    body = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
    }
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/_matrix/client/v3/login", json=body) as response:
            assert response.status == 200, await response.text()
            data = await response.json()
    return MatrixClient(url, data["user_id"], data["access_token"])


async def ping_in_the_waiting_chat(client: MatrixClient) -> str:
    rooms = (await client.request("GET", "/v3/joined_rooms"))["joined_rooms"]
    assert len(rooms) == 1, rooms  # the direct chat with the bot that doryo dev prepared
    event = await client.send_text(rooms[0], "!ping")
    pong = await client.wait_for_reply(rooms[0], event, timeout=30)
    return str(pong["content"]["body"])


async def answers(redis_url: str) -> bool:
    redis = Redis.from_url(redis_url, socket_connect_timeout=1)
    try:
        return bool(await redis.ping())
    except (RedisError, OSError):
        return False
    finally:
        await redis.aclose()


def processes_using(path: Path) -> list[str]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if str(path) in cmdline:
            found.append(cmdline[:120])
    return found


async def stopped(path: Path, timeout: float = 5) -> None:
    """Until no process runs with `path` on its command line (the last ones just exited)."""

    async def none_left() -> bool:
        return processes_using(path) == []

    try:
        await eventually(none_left, timeout=timeout)
    except TimeoutError:
        raise AssertionError(f"still running: {processes_using(path)}") from None


async def test_doryo_dev_end_to_end(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    # Nothing listens there: doryo dev starts a private redis-server, as on a fresh machine.
    no_redis = f"redis://127.0.0.1:{free_port()}/0"
    process, first = await start_dev(data_dir, no_redis)
    try:
        client = await log_in(first["url"], first["user"], first["password"])
        assert (await ping_in_the_waiting_chat(client)).startswith("Pong!")
        await client.close()
        redis_url = load_config(data_dir / "config.yaml", environ={}).redis.url.get_secret_value()
        assert redis_url != no_redis and await answers(redis_url)
    finally:
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 60) == 0
    await stopped(data_dir)  # Synapse and PostgreSQL
    assert not await answers(redis_url)  # and the private Redis

    process, second = await start_dev(data_dir, no_redis)
    try:
        assert second["user"] == first["user"] and second["password"] == first["password"]
        client = await log_in(second["url"], second["user"], second["password"])
        assert (await ping_in_the_waiting_chat(client)).startswith("Pong!")
        await client.close()
    finally:
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 60) == 0
