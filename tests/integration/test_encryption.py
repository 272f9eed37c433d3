"""Encrypted rooms on the real Synapse, with people whose client encrypts (matrix-nio with
vodozemac, as Element does): the bot reads and answers there, and never in the clear."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import olm
import pytest
from mautrix.api import Method
from mautrix.api import Path as ApiPath
from mautrix.types import RoomID
from nio import RoomMessageNotice, RoomMessageText

from bot.actions.card import ACTION_KEY
from bot.app import Doryo
from bot.core.config import Config
from bot.memory import LocalEmbedder
from tests.conftest import Homeserver, make_config, running_bot, start_homeserver
from tests.encrypted_client import EncryptedUser
from tests.fakes.llm_script import Answer
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.agent_helpers import ANSWER_KEY
from tests.integration.test_agent import FACT, indexed
from tests.integration.workspace_helpers import link_target
from tests.poll import eventually

pytestmark = pytest.mark.timeout(180)

ENCRYPTION = {
    "enabled": True,
    "pickle_key": "a pickle key for the tests",
    "cross_signing_seed": "a cross-signing seed for the tests, long enough",
    "key_wait": 3,
}


@pytest.fixture
def encrypted_config(bot_config: Callable[..., Config]) -> Callable[..., Config]:
    def build(**sections: Any) -> Config:
        encryption = {**ENCRYPTION, **sections.pop("encryption", {})}
        return bot_config(encryption=encryption, **sections)

    return build


@pytest.fixture
async def encrypted_bot(
    encrypted_config: Callable[..., Config], local_embedder: LocalEmbedder
) -> AsyncIterator[Doryo]:
    async with running_bot(encrypted_config(), local_embedder) as doryo:
        yield doryo


@pytest.fixture
async def alice(homeserver: Homeserver, tmp_path: Path) -> AsyncIterator[EncryptedUser]:
    user = await EncryptedUser.register(homeserver.synapse, tmp_path / "alice", "alice")
    yield user
    await user.close()


def notices_from(user: EncryptedUser, sender: str) -> list[RoomMessageNotice | RoomMessageText]:
    return [
        e for e in user.from_sender(sender) if isinstance(e, RoomMessageNotice | RoomMessageText)
    ]


async def encrypted_dm(alice: EncryptedUser, bot: Doryo) -> str:
    room_id = await alice.create_room(is_direct=True, invite=[bot.config.bot_user_id])
    await alice.wait_joined(room_id, bot.config.bot_user_id)
    return room_id


def bot_events_in_clear(raw: list[dict[str, Any]], bot_user_id: str) -> list[dict[str, Any]]:
    """Room events the bot sent unencrypted (state events cannot be encrypted)."""
    return [
        e
        for e in raw
        if e.get("sender") == bot_user_id
        and "state_key" not in e
        and e.get("type") not in ("m.room.encrypted", "m.room.redaction")
    ]


async def test_ping_in_an_encrypted_dm(alice: EncryptedUser, encrypted_bot: Doryo) -> None:
    bot_id = encrypted_bot.config.bot_user_id
    room_id = await encrypted_dm(alice, encrypted_bot)
    await alice.send(room_id, "!ping")

    pong = await alice.until(
        lambda events: [e for e in notices_from(alice, bot_id) if "Pong" in e.body]
    )
    assert pong[0].decrypted, "the bot's answer was not encrypted"
    assert not alice.undecrypted(), "alice could not read something the bot sent"
    raw = await alice.raw_messages(room_id)
    assert bot_events_in_clear(raw, bot_id) == [], "the bot sent something in the clear"


async def test_the_bots_device_is_cross_signed_by_its_own_keys(
    alice: EncryptedUser, encrypted_bot: Doryo
) -> None:
    """What a client checks to show the device as verified by its owner: the device's keys
    signed by the user's self-signing key, itself signed by the master key."""
    bot_id = encrypted_bot.config.bot_user_id
    assert encrypted_bot.ctx.encryption is not None
    device = encrypted_bot.ctx.encryption.device_id
    keys = await alice.query_keys(bot_id)
    master = next(iter(keys["master_keys"][bot_id]["keys"].values()))
    self_signing = keys["self_signing_keys"][bot_id]
    ssk = next(iter(self_signing["keys"].values()))
    assert verified(self_signing, bot_id, master)
    assert verified(keys["device_keys"][bot_id][device], bot_id, ssk)


def verified(signed: dict[str, Any], user_id: str, key: str) -> bool:
    """`signed` (device keys or a cross-signing key) carries a valid signature by `key`."""
    signature = signed.get("signatures", {}).get(user_id, {}).get(f"ed25519:{key}")
    if signature is None:
        return False
    unsigned = {k: v for k, v in signed.items() if k not in ("signatures", "unsigned")}
    message = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    try:
        olm.ed25519_verify(key, message, signature)
    except olm.OlmVerifyError:
        return False
    return True


def relation(event: Any) -> dict[str, Any]:
    relates = event.source.get("content", {}).get("m.relates_to")
    return relates if isinstance(relates, dict) else {}


async def command(user: EncryptedUser, room_id: str, text: str, bot_id: str) -> str:
    """Send `text` (encrypted); the body of the bot's answer to it."""
    event_id = await user.send(room_id, text)

    def answered(events: list[Any]) -> str | None:
        for event in notices_from(user, bot_id):
            relates = relation(event)
            if (relates.get("m.in_reply_to") or {}).get("event_id") == event_id:
                return str(event.body)
        return None

    return str(await user.until(answered))


def latest_content(user: EncryptedUser, room_id: str, event_id: str) -> dict[str, Any]:
    """What people see of the bot's event `event_id` after its latest edit."""
    content: dict[str, Any] = {}
    for event in user.in_room(room_id):
        if event.event_id == event_id:
            content = event.source["content"]
        relates = relation(event)
        if relates.get("rel_type") == "m.replace" and relates.get("event_id") == event_id:
            content = event.source["content"]["m.new_content"]
    return content


async def encrypted_team(
    alice: EncryptedUser, bot: Doryo, *, encrypted: bool = True
) -> tuple[str, str, str]:
    """(DM, workspace ID, session) — a workspace made in an encrypted DM, its sessions
    encrypted by its setting (or not), alice its host and in its first session."""
    bot_id = bot.config.bot_user_id
    dm = await encrypted_dm(alice, bot)
    assert "is ready" in await command(alice, dm, "!ws create Rocket", bot_id)
    workspace = (await bot.ctx.workspaces.of_member(alice.user_id))[0]
    await alice.client.join(workspace.space_id)
    if encrypted:
        assert "encrypted" in await command(alice, dm, "!ws settings encrypted on", bot_id)
    session = link_target(await command(alice, dm, "!session start Kickoff", bot_id))
    await alice.client.join(session)
    await alice.step()
    assert alice.client.rooms[session].encrypted == encrypted
    return dm, workspace.id, session


async def test_ask_in_an_encrypted_session_streams_and_cites(
    alice: EncryptedUser, encrypted_bot: Doryo, model_server: FakeOpenAI
) -> None:
    bot = encrypted_bot
    bot_id = bot.config.bot_user_id
    _, _, session = await encrypted_team(alice, bot)
    fact = await alice.send(session, FACT)
    other = await alice.send(session, "Also: the office plants need water on Fridays.")
    await indexed(bot, fact, other)
    # Stored and remembered as its sender wrote it, not as ciphertext.
    stored = await bot.ctx.db.fetchval("SELECT body FROM messages WHERE event_id = $1", fact)
    assert stored == FACT

    words = "Project Falcon launches on March 14 [1], as Dana decided. " * 3
    model_server.script(Answer(words.strip(), chunk_delay=0.12))
    question = await alice.send(session, "@ask when do we launch Falcon?")

    def answer_event(events: list[Any]) -> str | None:
        for event in events:
            block = event.source.get("content", {}).get(ANSWER_KEY)
            if (
                event.sender == bot_id
                and isinstance(block, dict)
                and block.get("question") == question
                and relation(event).get("rel_type") != "m.replace"
            ):
                return str(event.event_id)
        return None

    answer = await alice.until(answer_event)
    await alice.until(
        lambda _: (
            latest_content(alice, session, answer).get(ANSWER_KEY, {}).get("status") == "done"
        )
    )
    final = latest_content(alice, session, answer)
    assert "March 14" in final["body"]
    assert final[ANSWER_KEY]["sources"] == [fact]
    edits = [
        e
        for e in alice.in_room(session)
        if relation(e).get("rel_type") == "m.replace" and relation(e).get("event_id") == answer
    ]
    assert len(edits) >= 2, "the answer was not streamed by edits"
    assert all(e.decrypted for e in edits)
    assert not alice.undecrypted()
    raw = await alice.raw_messages(session, limit=100)
    assert bot_events_in_clear(raw, bot_id) == [], "the bot sent something in the clear"
    # Edits keep their relation outside the ciphertext: the homeserver and clients see it.
    raw_edits = [
        e
        for e in raw
        if e["sender"] == bot_id
        and e["content"].get("m.relates_to", {}).get("rel_type") == "m.replace"
    ]
    assert raw_edits and all(e["type"] == "m.room.encrypted" for e in raw_edits)


async def test_act_confirmed_by_plain_or_encrypted_reaction_runs_once(
    alice: EncryptedUser, encrypted_bot: Doryo
) -> None:
    bot = encrypted_bot
    bot_id = bot.config.bot_user_id
    _, workspace_id, session = await encrypted_team(alice, bot)

    async def card_for(text: str) -> str:
        event_id = await alice.send(session, text)

        def card(events: list[Any]) -> str | None:
            for event in events:
                if (
                    event.sender == bot_id
                    and ACTION_KEY in event.source.get("content", {})
                    and (relation(event).get("m.in_reply_to") or {}).get("event_id") == event_id
                ):
                    return str(event.event_id)
            return None

        return str(await alice.until(card))

    def status(card: str) -> str:
        return str(latest_content(alice, session, card).get(ACTION_KEY, {}).get("status"))

    reaction = {"m.relates_to": {"rel_type": "m.annotation", "key": "✅"}}
    # As Element does it: the reaction in the clear, in an encrypted room.
    plain = await card_for('@act create_task title="Plain"')
    reaction["m.relates_to"]["event_id"] = plain
    await alice.send_raw(session, "m.reaction", reaction)
    await alice.until(lambda _: status(plain) == "done")
    # As other clients may: the reaction encrypted.
    hidden = await card_for('@act create_task title="Hidden"')
    await alice.client.room_send(
        session,
        "m.reaction",
        {"m.relates_to": {"rel_type": "m.annotation", "key": "✅", "event_id": hidden}},
        ignore_unverified_devices=True,
    )
    await alice.until(lambda _: status(hidden) == "done")
    # Each ran once, whatever was sent again (encrypted: the homeserver cannot refuse a
    # second identical reaction it cannot read).
    await alice.client.room_send(session, "m.reaction", reaction, ignore_unverified_devices=True)
    await bot.idle(30)
    tasks = await bot.ctx.tasklist.of_workspace(workspace_id)
    assert sorted(t.title for t in tasks) == ["Hidden", "Plain"]
    raw = await alice.raw_messages(session, limit=100)
    assert bot_events_in_clear(raw, bot_id) == []


async def test_restart_keeps_the_device_and_reads_on(
    alice: EncryptedUser, encrypted_config: Callable[..., Config], local_embedder: LocalEmbedder
) -> None:
    config = encrypted_config()
    bot_id = config.bot_user_id
    async with running_bot(config, local_embedder) as bot:
        device = bot.ctx.encryption.device_id if bot.ctx.encryption else ""
        room_id = await encrypted_dm(alice, bot)
        assert "Pong" in await command(alice, room_id, "!ping", bot_id)
    async with running_bot(config, local_embedder) as bot:
        assert bot.ctx.encryption is not None
        assert bot.ctx.encryption.device_id == device
        devices = await bot.ctx.encryption.client.api.request(Method.GET, ApiPath.v3.devices)
        assert [d["device_id"] for d in devices["devices"]] == [device]  # one, with keys
        # The room key from before the restart still works both ways.
        assert "Pong" in await command(alice, room_id, "!ping", bot_id)
    assert not alice.undecrypted()


async def test_a_new_device_of_a_member_reads_later_answers(
    homeserver: Homeserver, alice: EncryptedUser, encrypted_bot: Doryo, tmp_path: Path
) -> None:
    bot_id = encrypted_bot.config.bot_user_id
    room_id = await encrypted_dm(alice, encrypted_bot)
    assert "Pong" in await command(alice, room_id, "!ping", bot_id)
    phone = await EncryptedUser.login(
        homeserver.url, alice.user_id, alice.password, tmp_path / "phone"
    )
    try:
        await alice.step()  # alice's first device learns of the new one, as the bot does
        await command(alice, room_id, "!ping", bot_id)
        later = await phone.until(
            lambda _: [
                e
                for e in notices_from(phone, bot_id)
                if e.source.get("room_id") == room_id and "Pong" in e.body
            ]
        )
        assert later[-1].decrypted
    finally:
        await phone.close()


async def test_undecryptable_message_is_told_once(
    alice: EncryptedUser, encrypted_config: Callable[..., Config], local_embedder: LocalEmbedder
) -> None:
    config = encrypted_config(encryption={"key_wait": 0.5})
    async with running_bot(config, local_embedder) as bot:
        bot_id = bot.config.bot_user_id
        room_id = await encrypted_dm(alice, bot)
        # Delivery flowing both ways first (the module's homeserver may still be retrying
        # what a previous test's bot did not take).
        assert "Pong" in await command(alice, room_id, "!ping", bot_id)
        # A message whose key the bot never gets (as if sent before it joined).
        lost = {
            "algorithm": "m.megolm.v1.aes-sha2",
            "ciphertext": "AwgAEnB" + "A" * 80,
            "sender_key": "x" * 43,
            "session_id": "a-session-nobody-shared",
            "device_id": alice.device_id,
        }
        first = await alice.send_raw(room_id, "m.room.encrypted", lost)
        told = await alice.until(
            lambda _: [e for e in notices_from(alice, bot_id) if "could not read" in e.body],
            timeout=60,
        )
        assert told[0].decrypted
        assert (relation(told[0]).get("m.in_reply_to") or {}).get("event_id") == first
        assert alice.user_id in told[0].source["content"]["m.mentions"]["user_ids"]
        # The same key lost again: no second notice; the room goes on.
        await alice.send_raw(room_id, "m.room.encrypted", lost)
        assert "Pong" in await command(alice, room_id, "!ping", bot_id)
        await bot.idle(30)
        await alice.step()
        assert len([e for e in notices_from(alice, bot_id) if "could not read" in e.body]) == 1


async def test_a_homeserver_that_encrypts_every_room(
    tmp_path_factory: pytest.TempPathFactory,
    database_url: str,
    redis_url: str,
    model_server: FakeOpenAI,
    local_embedder: LocalEmbedder,
    tmp_path: Path,
) -> None:
    hs = await start_homeserver(
        tmp_path_factory.mktemp("synapse-encrypting"),
        extra_config={"encryption_enabled_by_default_for_room_type": "all"},
    )
    try:
        config = make_config(
            hs, database_url, redis_url, tmp_path, model_server.base_url, encryption=ENCRYPTION
        )
        async with running_bot(config, local_embedder) as bot:
            bot_id = bot.config.bot_user_id
            alice = await EncryptedUser.register(hs.synapse, tmp_path / "alice", "alice")
            try:
                # A room made without asking for encryption: the homeserver encrypts it.
                room_id = await alice.create_room(encrypted=False, is_direct=True, invite=[bot_id])
                await alice.wait_joined(room_id, bot_id)
                assert alice.client.rooms[room_id].encrypted
                assert "Pong" in await command(alice, room_id, "!ping", bot_id)
                # The rooms the bot makes itself are encrypted too, from their first message.
                assert "is ready" in await command(alice, room_id, "!ws create Forced", bot_id)
                workspace = (await bot.ctx.workspaces.of_member(alice.user_id))[0]
                await alice.client.join(workspace.space_id)
                answer = await command(alice, room_id, "!session start Forced", bot_id)
                session = link_target(answer)
                await alice.client.join(session)
                await alice.step()
                assert alice.client.rooms[session].encrypted
                await command(alice, session, "!ping", bot_id)
                for room in (room_id, session):
                    raw = await alice.raw_messages(room, limit=100)
                    assert bot_events_in_clear(raw, bot_id) == [], room
                assert not alice.undecrypted()
            finally:
                await alice.close()
    finally:
        await hs.close_clients()
        await hs.synapse.stop()


async def test_a_homeserver_without_to_device_delivery_stops_the_bot_with_the_setting(
    tmp_path_factory: pytest.TempPathFactory,
    database_url: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    hs = await start_homeserver(
        tmp_path_factory.mktemp("synapse-plain"), encryption_extensions=False
    )
    try:
        config = make_config(hs, database_url, redis_url, tmp_path, encryption=ENCRYPTION)
        bot = Doryo(config)
        await bot.start()
        try:
            await asyncio.wait_for(bot.gave_up.wait(), timeout=60)
            assert not bot.connected.is_set()
            assert "msc2409_to_device_messages_enabled" in str(bot.failure)
        finally:
            await bot.stop()
    finally:
        await hs.synapse.stop()


async def test_a_room_key_journaled_before_a_crash_is_taken_in_at_the_next_start(
    alice: EncryptedUser, encrypted_config: Callable[..., Config], local_embedder: LocalEmbedder
) -> None:
    """A to-device message is sent once: the bot that answered 200 for it and died before its
    device took the key in must still read the message it unlocks."""
    config = encrypted_config(encryption={"key_wait": 30})
    bot_id = config.bot_user_id
    async with running_bot(config, local_embedder) as bot:
        room_id = await encrypted_dm(alice, bot)
        # From here the process "dies" right after the homeserver's 200: nothing journaled is
        # taken in any more.
        bot.sink.take_in_crypto_soon = lambda: None  # type: ignore[method-assign]
        event_id = await alice.send(room_id, "!ping")  # its key goes in a to-device message

        async def journaled() -> bool:
            rows = await bot.ctx.db.fetchval(
                "SELECT count(*) FROM appservice_transactions"
                " WHERE crypto LIKE '%m.room.encrypted%'"
            )
            return bool(rows)

        await eventually(journaled, timeout=30)
        before = await bot.ctx.db.fetchval(
            "SELECT array_agg(seq) FROM appservice_transactions WHERE crypto IS NOT NULL"
        )
    async with running_bot(config, local_embedder) as bot:
        pong = await alice.until(lambda _: answer_from(alice, room_id, event_id, bot_id))
        assert "Pong" in pong.body and pong.decrypted
        # Only what was journaled before the "crash": the new device's own key-sharing may be
        # arriving (and being taken in) at this very moment.
        left = await bot.ctx.db.fetchval(
            "SELECT count(*) FROM appservice_transactions"
            " WHERE crypto IS NOT NULL AND seq = ANY($1::bigint[])",
            before,
        )
        assert left == 0
    assert not [e for e in notices_from(alice, bot_id) if "could not read" in e.body]


def answer_from(user: EncryptedUser, room_id: str, event_id: str, sender: str) -> Any:
    for event in notices_from(user, sender):
        if (
            event.source.get("room_id") == room_id
            and (relation(event).get("m.in_reply_to") or {}).get("event_id") == event_id
        ):
            return event
    return None


async def one_who_left(
    alice: EncryptedUser, bob: EncryptedUser, bot_id: str
) -> tuple[str, Any, Any]:
    """A room of alice, bob and the bot: bob reads the bot's answer there and leaves, alice asks
    again. (The room, the answer bob read, the answer after he left.)"""
    room_id = await alice.create_room(invite=[bot_id, bob.user_id])
    await bob.client.join(room_id)
    await alice.wait_joined(room_id, bot_id)
    await alice.wait_joined(room_id, bob.user_id)
    first = await alice.send(room_id, "!ping")
    read = await bob.until(lambda _: answer_from(bob, room_id, first, bot_id))

    await bob.client.room_leave(room_id)
    await alice.until(lambda _: bob.user_id not in alice.client.rooms[room_id].users)
    second = await alice.send(room_id, "!ping")
    answer = await alice.until(lambda _: answer_from(alice, room_id, second, bot_id))
    return room_id, read, answer


async def test_one_who_left_never_gets_the_next_key(
    homeserver: Homeserver, alice: EncryptedUser, encrypted_bot: Doryo, tmp_path: Path
) -> None:
    bot_id = encrypted_bot.config.bot_user_id
    bob = await EncryptedUser.register(homeserver.synapse, tmp_path / "bob", "bob")
    try:
        room_id, _, answer = await one_who_left(alice, bob, bot_id)
        session_id = next(
            e["content"]["session_id"]
            for e in await alice.raw_messages(room_id)
            if e["event_id"] == answer.event_id
        )
        await bob.step()
        sessions = bob.client.olm.inbound_group_store
        assert not [s for s in sessions if s.id == session_id], "bob got the key after leaving"
    finally:
        await bob.close()


async def test_a_room_turned_encrypted_mid_answer_gets_the_rest_encrypted(
    alice: EncryptedUser, encrypted_bot: Doryo, model_server: FakeOpenAI
) -> None:
    bot = encrypted_bot
    bot_id = bot.config.bot_user_id
    assert bot.ctx.encryption is not None
    _, _, room_id = await encrypted_team(alice, bot, encrypted=False)
    words = " ".join(f"word{n}" for n in range(40))
    model_server.script(Answer(words, chunk_delay=0.1))
    question = await alice.send(room_id, "@ask tell me forty words")
    await alice.until(lambda _: answer_from_thread_or_reply(alice, room_id, question, bot_id))
    # Mid-answer, the room turns encrypted (as Element's room settings do it).
    await alice.client.room_put_state(
        room_id, "m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"}
    )
    encryption = bot.ctx.encryption
    await eventually(lambda: encryption.rooms.is_encrypted(RoomID(room_id)), timeout=10)
    answer = answer_from_thread_or_reply(alice, room_id, question, bot_id)
    await alice.until(
        lambda _: (
            latest_content(alice, room_id, answer.event_id).get(ANSWER_KEY, {}).get("status")
            == "done"
        ),
        timeout=60,
    )
    timeline = list(reversed(await alice.raw_messages(room_id, limit=200)))
    turned = next(i for i, e in enumerate(timeline) if e["type"] == "m.room.encryption")
    after = [e for e in timeline[turned:] if e["sender"] == bot_id and "state_key" not in e]
    assert after, "the answer ended before the room turned encrypted"
    # Once the bot has seen the state event, nothing of it goes out in the clear again.
    first_encrypted = next(i for i, e in enumerate(after) if e["type"] == "m.room.encrypted")
    assert all(e["type"] == "m.room.encrypted" for e in after[first_encrypted:])
    assert after[-1]["type"] == "m.room.encrypted"  # the final, done edit included
    assert "Pong" in await command(alice, room_id, "!ping", bot_id)
    raw = await alice.raw_messages(room_id, limit=5)
    assert bot_events_in_clear(raw, bot_id) == []


def answer_from_thread_or_reply(
    user: EncryptedUser, room_id: str, event_id: str, sender: str
) -> Any:
    for event in user.in_room(room_id):
        relates = relation(event)
        if event.sender == sender and (
            (relates.get("m.in_reply_to") or {}).get("event_id") == event_id
            or (relates.get("rel_type") == "m.thread" and relates.get("event_id") == event_id)
        ):
            return event
    return None


async def test_edits_and_redactions_of_encrypted_messages_follow_into_memory(
    alice: EncryptedUser, encrypted_bot: Doryo
) -> None:
    bot = encrypted_bot
    _, workspace_id, session = await encrypted_team(alice, bot)
    fact = await alice.send(session, FACT)
    other = await alice.send(session, "Also: the office plants need water on Fridays.")
    await indexed(bot, fact, other)
    memory = bot.ctx.memory
    assert memory is not None

    # An edit, encrypted like the message (its m.relates_to outside the ciphertext).
    edit = await alice.send(
        session,
        "* The launch date moved to April 2.",
        **{
            "m.new_content": {"msgtype": "m.text", "body": "The launch date moved to April 2."},
            "m.relates_to": {"rel_type": "m.replace", "event_id": fact},
        },
    )
    await indexed(bot, edit)
    hits = await memory.search(workspace_id, "launch date", k=5)
    texts = [h.item.text for h in hits if h.item.event_id == fact]
    assert texts and all("April 2" in t for t in texts)

    # A redaction (never encrypted) deletes what memory holds of it.
    await alice.client.room_redact(session, fact)
    marker = await alice.send(session, "after the redaction")
    await indexed(bot, marker)
    hits = await memory.search(workspace_id, "launch date", k=5)
    assert fact not in [h.item.event_id for h in hits]
    stored = await bot.ctx.db.fetchval("SELECT body FROM messages WHERE event_id = $1", fact)
    assert not stored


async def test_an_encrypted_redaction_is_a_forgery_and_changes_nothing(
    alice: EncryptedUser, encrypted_bot: Doryo
) -> None:
    """Redactions and state events are never encrypted: one inside a ciphertext is made to
    look like what it is not, and the bot acts on none (nor answers it)."""
    bot = encrypted_bot
    bot_id = bot.config.bot_user_id
    _, workspace_id, session = await encrypted_team(alice, bot)
    fact = await alice.send(session, FACT)
    await indexed(bot, fact)
    for kind, content in (
        ("m.room.redaction", {"redacts": fact}),
        ("m.room.member", {"membership": "leave"}),
    ):
        await alice.client.room_send(session, kind, content, ignore_unverified_devices=True)
    marker = await alice.send(session, "after the forgeries")
    await indexed(bot, marker)
    assert bot.ctx.memory is not None
    hits = await bot.ctx.memory.search(workspace_id, "launch date", k=5)
    assert fact in [h.item.event_id for h in hits]
    stored = await bot.ctx.db.fetchval("SELECT body FROM messages WHERE event_id = $1", fact)
    assert stored == FACT
    await alice.step()
    assert not [e for e in notices_from(alice, bot_id) if "could not read" in e.body]


async def test_a_device_deleted_on_the_homeserver_gets_its_keys_back_at_the_next_start(
    alice: EncryptedUser, encrypted_config: Callable[..., Config], local_embedder: LocalEmbedder
) -> None:
    """An admin deletes the bot's device (its keys go with it): the next start makes it again
    under the same ID and uploads its identity keys, instead of running a keyless device."""
    config = encrypted_config()
    bot_id = config.bot_user_id
    async with running_bot(config, local_embedder) as bot:
        assert bot.ctx.encryption is not None
        device = bot.ctx.encryption.device_id
        await bot.ctx.encryption.client.api.request(Method.DELETE, ApiPath.v3.devices[device])
    async with running_bot(config, local_embedder) as bot:
        assert bot.ctx.encryption is not None and bot.ctx.encryption.device_id == device
        keys = await alice.query_keys(bot_id)
        assert device in keys["device_keys"][bot_id]
        room_id = await encrypted_dm(alice, bot)
        assert "Pong" in await command(alice, room_id, "!ping", bot_id)


async def upload_as(user: EncryptedUser, data: bytes) -> str:
    """Ciphertext in the media repository, as Element uploads an encrypted room's file."""
    import aiohttp

    url = f"{user.homeserver}/_matrix/media/v3/upload"
    headers = {
        "Authorization": f"Bearer {user.client.access_token}",
        "Content-Type": "application/octet-stream",
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=data, headers=headers) as response,
    ):
        body = await response.json()
        assert response.status == 200, body
    return str(body["content_uri"])


async def test_a_file_in_an_encrypted_session_is_decrypted_and_read(
    alice: EncryptedUser, encrypted_bot: Doryo
) -> None:
    from nio.crypto.attachments import encrypt_attachment

    from tests.documents import pdf
    from tests.integration.test_documents import read

    bot = encrypted_bot
    _, _, session = await encrypted_team(alice, bot)
    data = pdf(["The encrypted plan says: we launch on June 9."])
    ciphertext, keys = encrypt_attachment(data)
    assert b"June 9" not in ciphertext
    mxc = await upload_as(alice, ciphertext)

    async def share(name: str, file: dict[str, Any]) -> str:
        return await alice.send(
            session,
            name,
            msgtype="m.file",
            filename=name,
            info={"mimetype": "application/pdf", "size": len(data)},
            file={**file, "url": mxc, "mimetype": "application/pdf"},
        )

    plan = await share("plan.pdf", keys)
    assert (await read(bot, session, plan)).status == "done"
    texts = await bot.ctx.db.fetch(
        "SELECT text FROM memory_items WHERE event_id = $1 AND kind = 'document'", plan
    )
    assert [r["text"] for r in texts] == ["The encrypted plan says: we launch on June 9."]

    # A file whose hash does not match what was uploaded (tampered with on the way) is not
    # read; its sharer is told, in the encrypted room.
    forged = await share(
        "forged.pdf", {**keys, "hashes": {"sha256": keys["hashes"]["sha256"][::-1]}}
    )
    document = await read(bot, session, forged)
    assert document.status == "skipped" and "could not be decrypted" in (document.reason or "")
    await alice.until(
        lambda _: any(
            "could not be decrypted" in str(getattr(e, "body", "")) for e in alice.in_room(session)
        )
    )
    raw = await alice.raw_messages(session, limit=50)
    assert bot_events_in_clear(raw, bot.config.bot_user_id) == []


def appservice_state(synapse_dir: Path) -> str | None:
    import sqlite3

    with sqlite3.connect(synapse_dir / "homeserver.db") as db:
        row = db.execute("SELECT state FROM application_services_state").fetchone()
    return None if row is None else str(row[0])


async def test_a_homeserver_that_restarted_thinking_the_bot_down_delivers_again(
    tmp_path_factory: pytest.TempPathFactory,
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    local_embedder: LocalEmbedder,
) -> None:
    """Synapse keeps an appservice it could not reach marked down across its own restart, and
    drops to-device messages for it until an event for it starts its retries — which in a quiet
    deployment may be never. The bot must wake it rather than stop with a configuration error."""
    synapse_dir = tmp_path_factory.mktemp("synapse-file")
    hs = await start_homeserver(synapse_dir, in_memory=False)
    try:
        config = make_config(hs, database_url, redis_url, tmp_path, encryption=ENCRYPTION)
        alice = await hs.user("alice")
        async with running_bot(config, local_embedder):
            room = await alice.create_room(invite=[config.bot_user_id], is_direct=True)
            await alice.wait_for(
                room,
                lambda e: (
                    e.get("state_key") == config.bot_user_id
                    and e.get("content", {}).get("membership") == "join"
                ),
            )
        # While the bot is away, a message for it cannot be delivered: marked down.
        await alice.send_text(room, "anyone there?")

        async def marked_down() -> bool:
            return appservice_state(synapse_dir) == "down"

        await eventually(marked_down, timeout=60)
        await hs.synapse.restart()
        async with running_bot(config, local_embedder) as bot:
            assert bot.failure is None and bot.ctx.encryption is not None
            assert bot.ctx.encryption.ready.is_set()
            # The message sent while it was away is handled too.
            event = await alice.send_text(room, "!ping")
            assert (
                "Pong" in (await alice.wait_for_reply(room, event, timeout=30))["content"]["body"]
            )
    finally:
        await hs.close_clients()
        await hs.synapse.stop()
