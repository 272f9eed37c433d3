"""A worker's use of the bot's device (bot.encryption.shared.RemoteDevice) when what answers at
encryption.device_url is not the device's owner, or answers wrongly: a configuration error at
start, and never a message sent in the clear. (The real owner: tests/integration/
test_encrypted_workers.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from appservice.errors import EncryptionUnavailable
from bot.core.config import Config, generate_tokens, load_config, write_config
from bot.core.errors import ConfigError
from bot.encryption.machine import NotAccepted, Undecryptable
from bot.encryption.shared import DEVICE_PATH, DeviceFailed, RemoteDevice
from synapse_dev.server import free_port

Answer = Callable[[web.Request], web.Response]


def config_for(tmp_path: Path, url: str) -> Config:
    path = tmp_path / "config.yaml"
    write_config(path, {"encryption": {"device_url": url}})
    generate_tokens(path)
    return load_config(path, environ={})


@pytest.fixture
async def owner() -> AsyncIterator[Callable[[Answer], Any]]:
    """Something listening at the device's URL that answers every request with `answer`."""
    runners: list[web.AppRunner] = []

    async def serve(answer: Answer) -> str:
        async def handle(request: web.Request) -> web.Response:
            return answer(request)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        return f"http://127.0.0.1:{port}"

    yield serve
    for runner in runners:
        await runner.cleanup()


@pytest.mark.parametrize("status", [403, 404])
async def test_a_url_that_is_not_the_owner_stops_the_worker_at_start(
    tmp_path: Path, owner: Callable[[Answer], Any], status: int
) -> None:
    url = await owner(lambda _: web.json_response({}, status=status))
    async with aiohttp.ClientSession() as http:
        device = RemoteDevice(config_for(tmp_path, url), http)
        with pytest.raises(ConfigError, match="encryption.device_url"):
            await device.start()


async def test_an_owner_not_there_yet_lets_the_worker_start_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with aiohttp.ClientSession() as http:
        device = RemoteDevice(config_for(tmp_path, f"http://127.0.0.1:{free_port()}"), http)
        await device.start()
        assert "not reachable" in caplog.text
        with pytest.raises(EncryptionUnavailable, match="not reachable"):
            await device.check()


async def test_answers_that_do_not_parse_never_become_plaintext(
    tmp_path: Path, owner: Callable[[Answer], Any]
) -> None:
    answers = {
        "encrypt": {"type": 5, "content": {"body": "hello"}},
        "decrypt": {"event": "not an event"},
    }

    def answer(request: web.Request) -> web.Response:
        return web.json_response(answers[request.path.rsplit("/", 1)[1]])

    url = await owner(answer)
    async with aiohttp.ClientSession() as http:
        device = RemoteDevice(config_for(tmp_path, url), http)
        with pytest.raises(EncryptionUnavailable):
            await device.encrypt("!room:x", "m.room.message", {"body": "hello"})
        with pytest.raises(EncryptionUnavailable):
            await device.decrypt({"type": "m.room.encrypted"})


async def test_the_owners_verdicts_reach_the_worker_as_its_own_would(
    tmp_path: Path, owner: Callable[[Answer], Any]
) -> None:
    verdicts = iter(
        [
            {"error": "undecryptable", "session_id": "S1", "reason": "the key has not arrived"},
            {"error": "not_accepted", "reason": "an encrypted m.room.redaction"},
        ]
    )
    seen: list[dict[str, Any]] = []

    def answer(request: web.Request) -> web.Response:
        assert request.path == DEVICE_PATH + "/decrypt"
        seen.append(dict(request.headers))
        return web.json_response(next(verdicts))

    url = await owner(answer)
    async with aiohttp.ClientSession() as http:
        device = RemoteDevice(config_for(tmp_path, url), http)
        with pytest.raises(Undecryptable) as caught:
            await device.decrypt({"type": "m.room.encrypted"}, wait=2)
        assert caught.value.session_id == "S1"
        with pytest.raises(NotAccepted):
            await device.decrypt({"type": "m.room.encrypted"})
    config = config_for(tmp_path, url)
    token = seen[0]["Authorization"].removeprefix("Bearer ")
    assert token and token not in (
        config.appservice.as_token.get_secret_value(),
        config.appservice.hs_token.get_secret_value(),
    )


async def test_an_owner_that_hangs_is_not_asked_again(
    tmp_path: Path, owner: Callable[[Answer], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its call timed out: the caller hears at once (the event is tried again later) rather
    than after as many more timeouts as the retry window holds."""
    calls = 0

    async def hang(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        await asyncio.sleep(5)
        return web.json_response({})

    app = web.Application()
    app.router.add_post(DEVICE_PATH + "/{operation}", hang)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    monkeypatch.setattr("bot.encryption.shared.CALL_TIMEOUT", 0.2)
    try:
        async with aiohttp.ClientSession() as http:
            device = RemoteDevice(config_for(tmp_path, f"http://127.0.0.1:{port}"), http)
            with pytest.raises(EncryptionUnavailable, match="did not answer"):
                await device.encrypt("!room:x", "m.room.message", {"body": "hello"})
    finally:
        await runner.cleanup()
    assert calls == 1


async def test_an_owner_that_fails_on_a_call_fails_the_event_once(
    tmp_path: Path, owner: Callable[[Answer], Any]
) -> None:
    """A 500 is the owner's fault with this event: the worker hears it at once, as one process
    would, instead of holding the room while it asks again."""
    calls = 0

    def fail(_: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.json_response({"error": "failed"}, status=500)

    url = await owner(fail)
    async with aiohttp.ClientSession() as http:
        device = RemoteDevice(config_for(tmp_path, url), http)
        with pytest.raises(DeviceFailed):
            await device.encrypt("!room:x", "m.room.message", {"body": "hello"})
    assert calls == 1


async def test_something_else_at_the_url_stops_the_worker_at_start(
    tmp_path: Path, owner: Callable[[Answer], Any]
) -> None:
    url = await owner(lambda _: web.json_response(["not", "a", "device"]))
    async with aiohttp.ClientSession() as http:
        with pytest.raises(ConfigError, match="encryption.device_url"):
            await RemoteDevice(config_for(tmp_path, url), http).start()
