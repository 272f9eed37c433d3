"""/health, /ready, /metrics, and members' presence reaching the bot's cache."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from bot.app import Doryo
from bot.core import strings
from tests.client import MatrixClient
from tests.conftest import Homeserver
from tests.fakes.llm_script import Answer
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.agent_helpers import final_answer
from tests.integration.workspace_helpers import Team, new_team, start_session
from tests.poll import eventually


async def get(bot: Doryo, path: str, *, admin: bool = False) -> tuple[int, str]:
    token = bot.config.admin_api.token.get_secret_value()
    headers = {"Authorization": f"Bearer {token}"} if admin else {}
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{bot.config.appservice.port}{path}"
        async with session.get(url, headers=headers) as response:
            return response.status, await response.text()


async def test_health_ready_metrics(homeserver: Homeserver, bot: Doryo) -> None:
    assert (await get(bot, "/health"))[0] == 200
    status, body = await get(bot, "/ready")
    assert status == 200, body
    assert '"database": {"ok": true' in body and '"redis": {"ok": true' in body
    status, metrics = await get(bot, "/metrics")
    assert status == 200
    for name in (
        "doryo_transactions_total",
        "doryo_events_received_total",
        "doryo_processing_lag_seconds",
        "doryo_errors_total",
    ):
        assert name in metrics, name
    # What the bot asks of the homeserver, by kind: a !ping's reply is one message sent.
    alice = await homeserver.user("alice")
    room = await alice.create_room(invite=[bot.config.bot_user_id])
    await alice.wait_for(
        room, lambda e: e["sender"] == bot.config.bot_user_id and e["type"] == "m.room.message"
    )
    sends = requests_of((await get(bot, "/metrics"))[1], "rooms/send")
    ping = await alice.send_text(room, "!ping")
    await alice.wait_for_reply(room, ping)
    _, metrics = await get(bot, "/metrics")
    assert requests_of(metrics, "rooms/send") == sends + 1


def requests_of(metrics: str, kind: str) -> float:
    prefix = f'doryo_homeserver_requests_total{{kind="{kind}"}} '
    found = [line for line in metrics.splitlines() if line.startswith(prefix)]
    return float(found[0].rsplit(" ", 1)[1]) if found else 0.0


async def test_ready_says_which_dependency_is_down(homeserver: Homeserver, bot: Doryo) -> None:
    await homeserver.synapse.stop()
    try:
        status, body = await get(bot, "/ready")
        assert status == 503
        assert '"homeserver": {"ok": false}' in body and '"database": {"ok": true}' in body
        # Why, and where it points, only for the operator.
        assert "error" not in body and "127.0.0.1" not in body
        status, body = await get(bot, "/ready", admin=True)
        assert status == 503 and '"homeserver": {"ok": false, "error": "' in body
    finally:
        await homeserver.synapse.start()


async def test_presence_reaches_the_cache_within_a_second(
    homeserver: Homeserver, bot: Doryo
) -> None:
    alice = await homeserver.user("alice")
    # The appservice gets presence of users it shares a room with.
    room = await alice.create_room(invite=[bot.config.bot_user_id])
    await alice.wait_for(
        room, lambda e: e["sender"] == bot.config.bot_user_id and e["type"] == "m.room.message"
    )
    for state in ("offline", "online", "unavailable", "online"):
        started = time.monotonic()
        await alice.set_presence(state, status_msg=f"now {state}")
        seen = await bot.presence.wait_for(alice.user_id, lambda p, s=state: p.presence == s, 5)
        assert time.monotonic() - started < 1.0, f"{state} took {time.monotonic() - started:.2f} s"
        assert seen.status_msg == f"now {state}"
    assert bot.presence.is_online(alice.user_id) is True
    assert bot.presence.is_online("@nobody:localhost") is None


async def asking_team(homeserver: Homeserver, bot: Doryo, name: str) -> tuple[Team, str]:
    team = await new_team(homeserver, bot, name)
    return team, await start_session(team, name)


async def test_typing_and_status_while_working(
    homeserver: Homeserver, bot: Doryo, model_server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model takes a while: typing shows (after the delay) and goes off with the answer,
    the "…" posted meanwhile notwithstanding."""
    team, room = await asking_team(homeserver, bot, "Typing")
    monkeypatch.setattr(bot.ctx.activity, "_delay", 0.3)
    model_server.script(Answer("Took a while.", first_delay=2))
    question = await team.alice.send_text(room, "@ask what is taking so long?")
    await final_answer(team.alice, room, question)
    await eventually(lambda: _typing_went_on_and_off(team.alice, room, bot.ctx.bot_user_id))


async def test_no_typing_while_only_a_reply_is_on_its_way(
    homeserver: Homeserver, bot: Doryo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A busy homeserver takes longer than the delay to accept a reply: a typing notice then
    would only arrive beside the reply (bench/load.py: it came on and off around nearly every
    reply, work for a homeserver that was already the bottleneck)."""
    alice = await homeserver.user("alice")
    bot_id = bot.config.bot_user_id
    room = await alice.create_room(invite=[bot_id])
    await alice.wait_for(room, lambda e: e["sender"] == bot_id and e["type"] == "m.room.message")
    monkeypatch.setattr(bot.ctx.activity, "_delay", 0.2)
    matrix = bot.ctx.matrix
    send_event = matrix.send_event

    async def slow_homeserver(*args: Any, **kwargs: Any) -> str:
        await asyncio.sleep(1.0)
        return await send_event(*args, **kwargs)

    monkeypatch.setattr(matrix, "send_event", slow_homeserver)
    for n in range(2):
        ping = await alice.send_text(room, f"!ping {n}")
        await alice.wait_for_reply(room, ping)
    await alice.send_text(room, "anything the bot did by now is synced")
    await alice.wait_for(room, lambda e: e["content"].get("body", "").startswith("anything"))
    await alice.sync_once(timeout_ms=200)
    assert not any(bot_id in users for users in alice.typing.get(room, []))


async def _typing_went_on_and_off(alice: MatrixClient, room: str, bot_id: str) -> bool:
    await alice.sync_once(timeout_ms=200)
    updates = alice.typing.get(room, [])
    on = [i for i, users in enumerate(updates) if bot_id in users]
    return bool(on) and any(bot_id not in users for users in updates[on[0] :])


async def test_a_stretch_of_requests_sets_the_busy_status_once_and_clears_it_once(
    homeserver: Homeserver, bot: Doryo, model_server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each presence change goes to everyone who shares a room with the bot: toggled per
    request, they added to the homeserver's load (bench/load.py)."""
    team, room = await asking_team(homeserver, bot, "Status")
    bot_id = bot.config.bot_user_id
    activity = bot.ctx.activity
    monkeypatch.setattr(activity, "_delay", 0.1)
    monkeypatch.setattr(activity, "_linger", 5.0)  # longer than between two questions
    matrix = activity._matrix
    changes: list[tuple[str, str | None]] = []
    set_presence = matrix.set_presence_no_fail

    async def recorded(presence: str, status_msg: str | None = None) -> None:
        await set_presence(presence, status_msg)
        changes.append((presence, status_msg))  # once the homeserver has it

    monkeypatch.setattr(matrix, "set_presence_no_fail", recorded)
    for n in range(4):
        model_server.script(Answer(f"Answer {n}.", first_delay=0.5))
        question = await team.alice.send_text(room, f"@ask question {n}?")
        await final_answer(team.alice, room, question)
    assert changes == [("online", strings.BUSY_STATUS)]
    status = await matrix.get_presence(bot_id)
    assert status.get("status_msg") == strings.BUSY_STATUS

    # Idle for longer than the linger: cleared, once.
    async def cleared() -> bool:
        return changes == [("online", strings.BUSY_STATUS), ("online", "")]

    await eventually(cleared)
    status = await matrix.get_presence(bot_id)
    assert not status.get("status_msg")
