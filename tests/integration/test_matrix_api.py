"""The bot's Matrix API against the real Synapse: each call, and its timeout."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from aiohttp import web

from appservice.errors import HomeserverUnavailable, MatrixRequestError
from appservice.matrix import MatrixAPI
from bot.app import Doryo
from tests.conftest import Homeserver


async def shared_room(homeserver: Homeserver, bot: Doryo) -> tuple[str, object]:
    alice = await homeserver.user("alice")
    room = await alice.create_room(invite=[bot.config.bot_user_id])
    await alice.wait_for(
        room,
        lambda e: (
            e["type"] == "m.room.member"
            and e["state_key"] == bot.config.bot_user_id
            and e["content"]["membership"] == "join"
        ),
    )
    return room, alice


async def test_send_edit_react_redact(homeserver: Homeserver, bot: Doryo) -> None:
    room, alice = await shared_room(homeserver, bot)
    matrix = bot.ctx.matrix
    text_id = await matrix.send_text(room, "plain")
    notice_id = await matrix.send_notice(room, "a notice")
    md_id = await matrix.send_markdown(room, "**bold** and `code`")
    edit_id = await matrix.edit(room, text_id, {"msgtype": "m.text", "body": "edited"})
    react_id = await matrix.react(room, md_id, "👍")
    await matrix.redact(room, notice_id, "test")

    await alice.wait_for(room, lambda e: e["type"] == "m.room.redaction")
    timeline = {e["event_id"]: e for e in alice.timeline[room]}
    assert timeline[text_id]["content"]["body"] == "plain"
    assert (
        timeline[md_id]["content"]["formatted_body"]
        == "<p><strong>bold</strong> and <code>code</code></p>"
    )
    edit = timeline[edit_id]["content"]
    assert edit["m.new_content"]["body"] == "edited"
    assert edit["m.relates_to"] == {"rel_type": "m.replace", "event_id": text_id}
    assert timeline[react_id]["content"]["m.relates_to"]["key"] == "👍"
    # A reaction twice is refused by Synapse; the best-effort variant swallows that.
    await matrix.react_no_fail(room, md_id, "👍")


async def test_same_transaction_id_sends_once(homeserver: Homeserver, bot: Doryo) -> None:
    room, _ = await shared_room(homeserver, bot)
    first = await bot.ctx.matrix.send_text(room, "once", txn_id="fixed-txn-1")
    again = await bot.ctx.matrix.send_text(room, "once", txn_id="fixed-txn-1")
    assert first == again


async def test_state_typing_presence(homeserver: Homeserver, bot: Doryo) -> None:
    room, alice = await shared_room(homeserver, bot)
    matrix = bot.ctx.matrix
    with pytest.raises(MatrixRequestError) as denied:
        await matrix.send_state(room, "org.example.state", {"x": 1}, "key")
    assert denied.value.errcode == "M_FORBIDDEN"  # the bot has power 0 in alice's room
    assert await matrix.get_state_event(room, "org.example.none") is None
    create = await matrix.get_state_event(room, "m.room.create")
    assert create is not None and "room_version" in create
    await matrix.set_typing(room, True, 5000)
    await matrix.set_typing(room, False)
    await matrix.set_presence("online", "testing")
    members = await matrix.joined_members(room)
    assert set(members) == {alice.user_id, bot.config.bot_user_id}


async def test_agent_users_act_as_themselves(homeserver: Homeserver, bot: Doryo) -> None:
    agent_id = f"@{bot.config.appservice.agent_localpart_prefix}tester:localhost"
    agent = bot.ctx.matrix.as_user(agent_id)
    await agent.ensure_registered()
    await agent.ensure_registered()  # already there: fine
    alice = await homeserver.user("alice")
    room = await alice.create_room(invite=[agent_id])
    await agent.join(room)
    event_id = await agent.send_text(room, "hello from an agent")
    found = await alice.wait_for(room, lambda e: e.get("event_id") == event_id)
    assert found[0]["sender"] == agent_id


async def test_every_call_times_out() -> None:
    hang = asyncio.Event()

    async def never(_: web.Request) -> web.Response:
        await hang.wait()
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", never)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as session:
        matrix = MatrixAPI(
            f"http://127.0.0.1:{port}", "t", "@doryo:localhost", session, timeout=0.3
        )
        started = time.monotonic()
        with pytest.raises(HomeserverUnavailable, match="timed out"):
            await matrix.send_text("!r:localhost", "hi")
        assert time.monotonic() - started < 2
    hang.set()
    await runner.cleanup()


async def test_unreachable_homeserver_is_unavailable() -> None:
    async with aiohttp.ClientSession() as session:
        matrix = MatrixAPI("http://127.0.0.1:1", "t", "@doryo:localhost", session, timeout=2)
        with pytest.raises(HomeserverUnavailable):
            await matrix.versions()
