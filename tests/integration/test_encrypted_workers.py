"""Encryption in a deployment of several processes: the receiver owns the bot's one device (its
keys, and the room keys the homeserver sends with its transactions); a worker reads and answers
in encrypted rooms through it (bot.encryption.shared). Real `python -m bot run --role …`
processes on a real Synapse, and people whose client encrypts (matrix-nio with vodozemac)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from bot.core.config import load_config
from bot.encryption.shared import DEVICE_PATH, device_token
from synapse_dev.server import free_port
from tests.conftest import Homeserver, fresh_database
from tests.encrypted_client import EncryptedUser
from tests.fakes.llm_script import Answer
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.agent_helpers import ANSWER_KEY
from tests.integration.test_encryption import (
    ENCRYPTION,
    answer_from,
    bot_events_in_clear,
    command,
    latest_content,
    one_who_left,
    relation,
)
from tests.integration.test_resilience import handled_once
from tests.processes import Deployment, deployment

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
async def model() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(default=Answer("Answered by a worker, encrypted.")) as fake:
        yield fake


@pytest.fixture(scope="module")
async def deployed(
    homeserver: Homeserver,
    postgres: Any,
    redis_url: str,
    model: FakeOpenAI,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Deployment]:
    """A receiver, which owns the bot's device, and a worker, which handles every event. Memory
    embeds with a cloud provider stood in by the fake model server (nothing here is about the
    embedding model, which would cost a minute to load)."""
    provider = {"kind": "openai", "base_url": model.base_url, "api_key": ""}
    async with fresh_database(postgres) as database_url:
        found = deployment(
            tmp_path_factory.mktemp("deployment"),
            homeserver=homeserver,
            database_url=database_url,
            redis_url=redis_url,
            model_url=model.base_url,
            embedder_port=free_port(),
            llm={
                "providers": {"local": provider, "cloud": provider},
                "timeouts": {"total": 30, "first_token": 20, "connect": 2},
                "retries": {"attempts": 1, "backoff": 0.01, "max_backoff": 0.05},
            },
            embeddings={"model": "cloud/fake-embed", "local_url": "", "timeout": 5},
            encryption=ENCRYPTION,
        )
        try:
            await found.start("receiver", "receiver", homeserver.as_port)
            await found.start("worker", "worker")
            yield found
        finally:
            await found.stop_and_check()


@pytest.fixture
async def running(
    deployed: Deployment, model: FakeOpenAI
) -> AsyncIterator[tuple[Deployment, FakeOpenAI]]:
    async with deployed.whole():
        model.clear()
        yield deployed, model


@pytest.fixture
async def alice(homeserver: Homeserver, tmp_path: Path) -> AsyncIterator[EncryptedUser]:
    user = await EncryptedUser.register(homeserver.synapse, tmp_path / "alice", "alice")
    yield user
    await user.close()


def token_of(processes: Deployment) -> str:
    return device_token(load_config(processes.config))


async def device_info(processes: Deployment, name: str = "receiver") -> tuple[int, Any]:
    url = f"http://127.0.0.1:{processes.ports[name]}{DEVICE_PATH}"
    headers = {"Authorization": f"Bearer {token_of(processes)}"}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        return response.status, await response.json(content_type=None)


async def encrypted_dm(alice: EncryptedUser, bot_id: str) -> str:
    room_id = await alice.create_room(is_direct=True, invite=[bot_id])
    await alice.wait_joined(room_id, bot_id)
    return room_id


async def test_a_worker_answers_in_an_encrypted_room_with_the_receivers_device(
    running: tuple[Deployment, FakeOpenAI], alice: EncryptedUser
) -> None:
    processes, model = running
    bot_id = processes.bot_id
    room = await encrypted_dm(alice, bot_id)
    assert "Pong" in await command(alice, room, "!ping", bot_id)
    assert "is ready" in await command(alice, room, "!ws create Rocket", bot_id)

    model.script(Answer("Falcon launches on March 14, as Dana decided. " * 3, chunk_delay=0.1))
    question = await alice.send(room, "@ask when do we launch Falcon?")

    answer = await alice.until(lambda _: answer_to(alice, bot_id, question))
    await alice.until(
        lambda _: latest_content(alice, room, answer).get(ANSWER_KEY, {}).get("status") == "done"
    )
    assert "March 14" in latest_content(alice, room, answer)["body"]
    edits = [e for e in alice.in_room(room) if relation(e).get("event_id") == answer]
    assert len(edits) >= 2 and all(e.decrypted for e in edits), "not streamed, or not encrypted"
    assert not alice.undecrypted(), "alice could not read something the bot sent"
    raw = await alice.raw_messages(room, limit=100)
    assert bot_events_in_clear(raw, bot_id) == [], "the bot sent something in the clear"

    # The worker handled it all, with the one device the receiver owns: no second device.
    assert await processes.metric("worker", 'doryo_events_processed_total{outcome="done"}') >= 3
    assert await processes.metric("receiver", "doryo_events_processed_total") == 0
    status, info = await device_info(processes)
    assert status == 200 and info["ready"] is True
    keys = await alice.query_keys(bot_id)
    assert list(keys["device_keys"][bot_id]) == [info["device_id"]]
    ready = await processes.ready("worker")
    assert ready["checks"]["encryption"]["ok"] is True


async def test_the_device_answers_only_the_deployments_processes(
    running: tuple[Deployment, FakeOpenAI],
) -> None:
    """Whoever reaches the receiver's port (the homeserver must) cannot use the bot's device:
    not without the device token, not with the homeserver's or the admin's, not with the
    appservice token itself; and what it is sent is checked before it is used."""
    processes, _ = running
    config = load_config(processes.config)
    base = f"http://127.0.0.1:{processes.ports['receiver']}{DEVICE_PATH}"
    forged = {
        "type": "m.room.encrypted",
        "room_id": "!nowhere:localhost",
        "sender": "@mallory:localhost",
        "event_id": "$forged",
        "origin_server_ts": 0,
        "content": {
            "algorithm": "m.megolm.v1.aes-sha2",
            "ciphertext": "AwgAEnAcVk",
            "sender_key": "a" * 43,
            "session_id": "b" * 43,
            "device_id": "EVIL",
        },
    }
    wrong = [
        None,
        config.appservice.hs_token.get_secret_value(),
        config.appservice.as_token.get_secret_value(),
        config.admin_api.token.get_secret_value(),
        secrets.token_hex(32),
    ]
    async with aiohttp.ClientSession() as session:
        for token in wrong:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            for method, path, body in [
                ("GET", "", None),
                ("POST", "/decrypt", {"event": forged}),
                ("POST", "/encrypt", {"room_id": "!x:localhost", "type": "m.text", "content": {}}),
                ("POST", "/member_changed", {"room_id": "!x:localhost"}),
            ]:
                async with session.request(
                    method, base + path, json=body, headers=headers
                ) as response:
                    assert response.status == 403, (token, path)

        headers = {"Authorization": f"Bearer {token_of(processes)}"}

        async def post(path: str, body: Any) -> tuple[int, Any]:
            async with session.post(base + path, json=body, headers=headers) as response:
                return response.status, await response.json(content_type=None)

        assert (await post("/decrypt", [forged]))[0] == 400
        assert (await post("/decrypt", {"event": "x"}))[0] == 400
        assert (await post("/decrypt", {"event": forged, "wait": 1e9}))[0] == 400
        assert (await post("/encrypt", {"room_id": "", "type": "m.room.message"}))[0] == 400
        assert (await post("/share_keys_with", {"user": "@mallory:localhost"}))[0] == 404
        async with session.post(base + "/decrypt", data=b"{not json", headers=headers) as r:
            assert r.status == 400
        # A ciphertext nobody shared a key for: unreadable, said as such, nothing else.
        status, answer = await post("/decrypt", {"event": forged, "wait": 0})
        assert status == 200 and answer["error"] == "undecryptable"
    # The workers serve no device.
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"http://127.0.0.1:{processes.ports['worker']}{DEVICE_PATH}",
            headers={"Authorization": f"Bearer {token_of(processes)}"},
        ) as response,
    ):
        assert response.status == 404


async def test_the_receiver_killed_while_a_worker_streams_encrypted_loses_nothing(
    running: tuple[Deployment, FakeOpenAI], alice: EncryptedUser
) -> None:
    """The device's owner dies while a worker streams an answer into an encrypted room: the
    worker's edits find nobody to encrypt them and wait (nothing goes out in the clear, nothing
    is dropped); once the receiver is back the same answer goes on, encrypted, to its end."""
    processes, model = running
    bot_id = processes.bot_id
    room = await encrypted_dm(alice, bot_id)
    assert "is ready" in await command(alice, room, "!ws create Rocket", bot_id)
    model.script(Answer("Falcon launches on March 14, as Dana decided. " * 8, chunk_delay=0.1))
    question = await alice.send(room, "@ask when do we launch Falcon?")
    answer = await alice.until(lambda _: answer_to(alice, bot_id, question))
    await alice.until(
        lambda _: [e for e in alice.in_room(room) if relation(e).get("event_id") == answer]
    )  # streaming
    waited_before = processes.log("worker").count(WAITED)
    processes.kill("receiver")
    killed_at = time.monotonic()
    await processes.processes["receiver"].wait()
    await asyncio.sleep(1)  # the worker meets the absent device
    await processes.start("receiver", "receiver", processes.ports["receiver"])
    await alice.until(
        lambda _: latest_content(alice, room, answer).get(ANSWER_KEY, {}).get("status") == "done",
        timeout=90,
    )
    recovered = time.monotonic() - killed_at
    print(f"@ask encrypted, the device's owner killed mid-stream: done {recovered:.1f} s later")
    assert processes.log("worker").count(WAITED) > waited_before, "the worker never waited"
    ping = await alice.send(room, "!ping")
    await alice.until(lambda _: answer_from(alice, room, ping, bot_id))
    assert answer_to(alice, bot_id, question) == answer  # one answer, not a second
    assert "March 14" in latest_content(alice, room, answer)["body"]
    assert not alice.undecrypted()
    raw = await alice.raw_messages(room, limit=200)
    assert bot_events_in_clear(raw, bot_id) == [], "the bot sent something in the clear"
    db = await asyncpg.connect(processes.database_url)
    try:
        await handled_once(db, [question, ping])
    finally:
        await db.close()


WAITED = "is not reachable"


def answer_to(alice: EncryptedUser, bot_id: str, question: str) -> str | None:
    found = [
        str(event.event_id)
        for event in alice.from_sender(bot_id)
        if (event.source.get("content", {}).get(ANSWER_KEY) or {}).get("question") == question
        and relation(event).get("rel_type") != "m.replace"
    ]
    assert len(found) <= 1, f"answered {len(found)} times"
    return found[0] if found else None


async def test_one_who_left_never_gets_the_next_key_from_a_worker(
    homeserver: Homeserver,
    running: tuple[Deployment, FakeOpenAI],
    alice: EncryptedUser,
    tmp_path: Path,
) -> None:
    """The worker sees bob leave and tells the device before it sends again there: the next
    message goes out under a new room key, which bob never gets."""
    processes, _ = running
    bot_id = processes.bot_id
    bob = await EncryptedUser.register(homeserver.synapse, tmp_path / "bob", "bob")
    try:
        room_id, read, answer = await one_who_left(alice, bob, bot_id)
        raw = {e["event_id"]: e for e in await alice.raw_messages(room_id)}
        before = raw[read.event_id]["content"]["session_id"]
        after = raw[answer.event_id]["content"]["session_id"]
        assert after != before, "the same room key after someone left"
        await bob.step()
        sessions = bob.client.olm.inbound_group_store
        assert not [s for s in sessions if s.id == after], "bob got the key after leaving"
    finally:
        await bob.close()
