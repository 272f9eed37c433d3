"""The provider gate's contract (bot/llm/gate.py): a request waits for its own call's check,
a refusal stops it as itself, a timed-out wait leaves the check running, and two gates (two
routers) never see each other's checks."""

from __future__ import annotations

import asyncio

import pytest

from bot.core.errors import RateLimited
from bot.llm.gate import ProviderGate


async def test_a_request_waits_for_its_calls_check_and_leaves_when_it_answers() -> None:
    gate = ProviderGate()
    check: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    with gate.held(check):
        request = asyncio.ensure_future(gate.hook(object()))
        await asyncio.sleep(0)
        assert not request.done()
        check.set_result(None)
        await asyncio.wait_for(request, 1)
    await gate.hook(object())  # outside the block: nothing held


async def test_a_refused_check_stops_the_request_with_the_refusal_itself() -> None:
    gate = ProviderGate()
    check: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    check.set_exception(
        RateLimited("rate limit reached", scope="user", limit="requests", reset_after=1)
    )
    with gate.held(check), pytest.raises(RateLimited):
        await gate.hook(object())


async def test_a_call_timing_out_while_it_waits_leaves_the_check_running() -> None:
    gate = ProviderGate()
    check: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    with gate.held(check), pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await gate.hook(object())
    assert not check.cancelled()
    check.set_result(None)


async def test_two_gates_and_two_tasks_each_see_their_own_check() -> None:
    first, second = ProviderGate(), ProviderGate()
    refused: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    refused.set_exception(
        RateLimited("rate limit reached", scope="user", limit="requests", reset_after=1)
    )

    go = asyncio.Event()

    async def other_call() -> None:
        await go.wait()
        await first.hook(object())  # a call started outside the block holds nothing

    other = asyncio.ensure_future(other_call())
    with first.held(refused):
        await second.hook(object())
        go.set()
        await asyncio.wait_for(other, 1)
        with pytest.raises(RateLimited):
            await first.hook(object())
