"""The transaction endpoint against the running bot and its real database: tokens, durable
deduplication (transaction ID and event ID), malformed events, the legacy path, and the journal
a transaction is acked from (a crash before it is unpacked, content it cannot unpack)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import asyncpg
import pytest

from bot.app import Doryo
from bot.core.config import Config
from bot.core.dispatcher import UNSURE_RETRIES
from bot.memory import LocalEmbedder
from tests.conftest import running_bot


def room_event(n: int, room: str = "!room:localhost", **fields: Any) -> dict[str, Any]:
    # A type the router ignores: these rooms do not exist, the bot must not try to answer.
    return {
        "event_id": f"${uuid.uuid4().hex}",
        "room_id": room,
        "type": "org.example.test",
        "sender": "@someone:localhost",
        "origin_server_ts": 0,
        "content": {"n": n},
        **fields,
    }


async def put(
    bot: Doryo, txn_id: str, body: Any, token: str | None = "hs", *, legacy: bool = False
) -> tuple[int, Any]:
    config = bot.config.appservice
    path = f"/transactions/{txn_id}" if legacy else f"/_matrix/app/v1/transactions/{txn_id}"
    headers = {}
    if token == "hs":
        headers["Authorization"] = f"Bearer {config.hs_token.get_secret_value()}"
    elif token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{config.port}{path}"
        kwargs = {"data": body} if isinstance(body, bytes) else {"json": body}
        async with session.put(url, headers=headers, **kwargs) as response:
            return response.status, await response.json(content_type=None)


async def stored(bot: Doryo, *event_ids: str) -> list[dict[str, Any]]:
    await bot.sink.settled()  # acked transactions are unpacked into the inbox after the 200
    rows = await bot.ctx.db.fetch(
        "SELECT event_id, state FROM inbox_events WHERE event_id = any($1::text[]) ORDER BY id",
        list(event_ids),
    )
    return [dict(r) for r in rows]


async def test_wrong_token_is_403_missing_is_401(bot: Doryo) -> None:
    event = room_event(1)
    status, body = await put(bot, "t1", {"events": [event]}, token="wrong")
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    status, body = await put(bot, "t1", {"events": [event]}, token=None)
    assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")
    assert await stored(bot, event["event_id"]) == []


async def test_query_token_is_accepted(bot: Doryo) -> None:
    token = bot.config.appservice.hs_token.get_secret_value()
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{bot.config.appservice.port}/_matrix/app/v1/transactions/q1"
        async with session.put(
            url, params={"access_token": token}, json={"events": []}
        ) as response:
            assert response.status == 200


async def test_same_transaction_twice_is_handled_once(bot: Doryo) -> None:
    events = [room_event(n) for n in range(3)]
    txn_id = f"dup-{uuid.uuid4().hex}"
    assert (await put(bot, txn_id, {"events": events}))[0] == 200
    assert (await put(bot, txn_id, {"events": events}))[0] == 200
    await bot.idle(10)
    rows = await stored(bot, *(e["event_id"] for e in events))
    assert [r["event_id"] for r in rows] == [e["event_id"] for e in events]
    assert {r["state"] for r in rows} == {"done"}
    txns = await bot.ctx.db.fetchval(
        "SELECT count(*) FROM appservice_transactions WHERE txn_id = $1", txn_id
    )
    assert txns == 1


async def test_reused_transaction_id_with_new_events_is_not_dropped(bot: Doryo) -> None:
    # Synapse on SQLite starts counting transaction IDs again after a restart.
    first, second = [room_event(1)], [room_event(2)]
    assert (await put(bot, "1", {"events": first}))[0] == 200
    assert (await put(bot, "1", {"events": second}))[0] == 200
    assert len(await stored(bot, first[0]["event_id"], second[0]["event_id"])) == 2


async def test_event_delivered_in_two_transactions_is_stored_once(bot: Doryo) -> None:
    event = room_event(1)
    await put(bot, f"a-{uuid.uuid4().hex}", {"events": [event]})
    await put(bot, f"b-{uuid.uuid4().hex}", {"events": [event, room_event(2)]})
    assert len(await stored(bot, event["event_id"])) == 1


@pytest.mark.parametrize(
    "malformed",
    [
        "a string",
        None,
        {"type": "m.room.message"},
        {
            "event_id": "$x",
            "room_id": "!r:localhost",
            "type": "m.room.message",
            "sender": "@a:b",
            "content": "text",
        },
        {"event_id": 17, "room_id": "!r:localhost", "type": "m.room.message", "sender": "@a:b"},
    ],
)
async def test_malformed_event_does_not_drop_the_others(bot: Doryo, malformed: Any) -> None:
    good = [room_event(1), room_event(2)]
    status, _ = await put(bot, uuid.uuid4().hex, {"events": [good[0], malformed, good[1]]})
    assert status == 200
    assert len(await stored(bot, *(e["event_id"] for e in good))) == 2


async def test_a_failing_early_look_loses_nothing(
    bot: Doryo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What looks at a transaction's events as they arrive (bot.agent.early) runs after the
    200; if it fails, the events are still unpacked and handled."""

    def broken(events: Any) -> None:
        raise RuntimeError("a bug in the early look")

    monkeypatch.setattr(bot.sink, "_on_journaled", broken)
    events = [room_event(1), room_event(2)]
    assert (await put(bot, uuid.uuid4().hex, {"events": events}))[0] == 200
    await bot.idle(10)
    rows = await stored(bot, *(e["event_id"] for e in events))
    assert [r["state"] for r in rows] == ["done", "done"]


async def test_legacy_path_and_ephemeral_only(bot: Doryo) -> None:
    event = room_event(1)
    assert (await put(bot, uuid.uuid4().hex, {"events": [event]}, legacy=True))[0] == 200
    assert len(await stored(bot, event["event_id"])) == 1
    presence = {
        "type": "m.presence",
        "sender": "@carol:localhost",
        "content": {"presence": "online"},
    }
    assert (await put(bot, uuid.uuid4().hex, {"ephemeral": [presence]}))[0] == 200
    assert bot.presence.is_online("@carol:localhost") is True


async def test_bad_bodies_are_refused_without_effect(bot: Doryo) -> None:
    status, body = await put(bot, "bad1", b"{not json")
    assert (status, body["errcode"]) == (400, "M_NOT_JSON")
    status, body = await put(bot, "bad2", [1, 2])
    assert (status, body["errcode"]) == (400, "M_BAD_JSON")


async def test_a_handler_crash_marks_only_that_event_failed(bot: Doryo) -> None:
    # An m.room.message whose content breaks the handler must not block the room behind it.
    room = f"!crash{uuid.uuid4().hex[:6]}:localhost"
    bad = room_event(
        1,
        room,
        type="m.room.member",
        state_key=bot.config.bot_user_id,
        content={"membership": "join"},
    )
    after = room_event(2, room)
    original = bot.ctx.rooms.set_membership

    async def explode(room_id: str, membership: str) -> None:
        raise RuntimeError("boom")

    bot.ctx.rooms.set_membership = explode  # type: ignore[method-assign]
    try:
        await put(bot, uuid.uuid4().hex, {"events": [bad, after]})
        await bot.idle(10)
    finally:
        bot.ctx.rooms.set_membership = original  # type: ignore[method-assign]
    rows = await stored(bot, bad["event_id"], after["event_id"])
    assert [r["state"] for r in rows] == ["failed", "done"]


async def journal(bot: Doryo, txn_id: str) -> list[tuple[bool, str | None]]:
    """Per journal row of this transaction ID: does it still hold its events, and why not
    unpacked."""
    rows = await bot.ctx.db.fetch(
        "SELECT events, unpack_error FROM appservice_transactions WHERE txn_id = $1", txn_id
    )
    return [(row["events"] is not None, row["unpack_error"]) for row in rows]


async def test_an_acked_transaction_survives_a_crash_before_it_is_unpacked(
    bot_config: Callable[..., Config],
    local_embedder: LocalEmbedder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = bot_config()
    room = f"!journal{uuid.uuid4().hex[:6]}:localhost"
    first, second = [room_event(1, room)], [room_event(2, room), room_event(3, room)]
    async with running_bot(config, local_embedder) as bot:

        async def database_gone() -> list[str]:
            raise ConnectionError("the database went away")  # as if the bot died here

        monkeypatch.setattr(bot.inbox, "unpack", database_gone)
        assert (await put(bot, "j1", {"events": first}))[0] == 200
        assert (await put(bot, "j2", {"events": second}))[0] == 200
        assert await journal(bot, "j1") == await journal(bot, "j2") == [(True, None)]
        assert await stored(bot, *(e["event_id"] for e in first + second)) == []
    monkeypatch.undo()

    async with running_bot(config, local_embedder) as bot:
        await bot.idle(10)
        rows = await stored(bot, *(e["event_id"] for e in first + second))
        assert [r["event_id"] for r in rows] == [e["event_id"] for e in first + second]
        assert {r["state"] for r in rows} == {"done"}
        assert await journal(bot, "j1") == await journal(bot, "j2") == [(False, None)]


async def test_a_nul_character_in_an_event_does_not_hold_up_its_transaction(bot: Doryo) -> None:
    # Canonical JSON allows it; PostgreSQL's jsonb does not.
    event = room_event(1, content={"body": "before\x00after", "n\x00": 1})
    assert (await put(bot, uuid.uuid4().hex, {"events": [event, room_event(2)]}))[0] == 200
    await bot.idle(10)
    content = await bot.ctx.db.fetchval(
        "SELECT event->'content' FROM inbox_events WHERE event_id = $1", event["event_id"]
    )
    assert content == {"body": "before\ufffdafter", "n\ufffd": 1}


async def test_a_journaled_transaction_that_cannot_be_unpacked_is_set_aside(bot: Doryo) -> None:
    # Nothing the endpoint accepts is known to do this; the journal must go on if it happens.
    await bot.ctx.db.execute(
        """
        INSERT INTO appservice_transactions (txn_id, fingerprint, event_count, events)
        VALUES ('broken', '\\x00', 1, '[{"event_id": "$a", "room_id": "!r:l", "type"')
        """
    )
    good = [room_event(1), room_event(2)]
    assert (await put(bot, uuid.uuid4().hex, {"events": good}))[0] == 200
    await bot.idle(10)
    rows = await stored(bot, *(e["event_id"] for e in good))
    assert [r["state"] for r in rows] == ["done", "done"]
    [(events_kept, error)] = await journal(bot, "broken")
    assert events_kept and "invalid input syntax for type json" in error


async def test_a_database_glitch_mid_event_is_retried_a_bug_is_not_forever(bot: Doryo) -> None:
    # When the database dies mid-query asyncpg raises InternalClientError: a short glitch must not
    # drop the event, and the same error for good must not hold the room up forever.
    glitchy = f"!glitch{uuid.uuid4().hex[:6]}:localhost"
    broken = f"!broken{uuid.uuid4().hex[:6]}:localhost"
    first, second = room_event(1, glitchy), room_event(2, broken)
    calls = {glitchy: 0, broken: 0}
    original = bot.ctx.workspaces.by_space  # asked for every event

    async def flaky(room_id: str) -> Any:
        calls[room_id] = calls.get(room_id, 0) + 1
        if room_id == broken or (room_id == glitchy and calls[room_id] <= 2):
            raise asyncpg.InternalClientError("unexpected connection_lost() call")
        return await original(room_id)

    bot.ctx.workspaces.by_space = flaky  # type: ignore[method-assign]
    try:
        await put(bot, uuid.uuid4().hex, {"events": [first, second]})
        await bot.idle(30)
    finally:
        bot.ctx.workspaces.by_space = original  # type: ignore[method-assign]
    rows = await stored(bot, first["event_id"], second["event_id"])
    assert [r["state"] for r in rows] == ["done", "failed"]
    assert calls[glitchy] == 3
    assert calls[broken] == UNSURE_RETRIES + 1


async def test_encryption_parts_are_not_journaled_when_encryption_is_off(bot: Doryo) -> None:
    """The registration asks for device lists (MSC3202) whether encryption is on or not: with
    it off, nothing would take them in, and the journal would keep them for ever."""
    assert bot.ctx.encryption is None
    event = room_event(1)
    txn = uuid.uuid4().hex
    body = {
        "events": [event],
        "org.matrix.msc3202.device_lists": {"changed": ["@someone:localhost"]},
        "de.sorunome.msc2409.to_device": [
            {"type": "m.room.encrypted", "sender": "@someone:localhost", "content": {}}
        ],
    }
    assert (await put(bot, txn, body))[0] == 200
    assert len(await stored(bot, event["event_id"])) == 1
    kept = await bot.ctx.db.fetchval(
        "SELECT crypto FROM appservice_transactions WHERE txn_id = $1", txn
    )
    assert kept is None
