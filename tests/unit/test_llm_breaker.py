"""The circuit breaker's state machine, on a clock the test moves."""

from __future__ import annotations

from bot.llm.breaker import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_only() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=3, cooldown=10, clock=clock)
    breaker.failure("HTTP 500")
    breaker.failure("HTTP 500")
    breaker.success()  # the run is broken
    breaker.failure()
    breaker.failure()
    assert breaker.state == "closed" and breaker.allow()
    breaker.failure("timed out")
    assert breaker.state == "open" and not breaker.allow()
    assert breaker.retry_in() == 10 and breaker.last_error == "timed out"


def test_half_open_lets_one_probe_through() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, cooldown=10, clock=clock)
    breaker.failure()
    clock.now += 9.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.state == "half_open"
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # everyone else waits for it
    breaker.success()
    assert breaker.state == "closed" and breaker.allow() and breaker.allow()


def test_a_failed_probe_opens_again_for_a_full_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=5, cooldown=10, clock=clock)
    for _ in range(5):
        breaker.failure()
    clock.now += 10
    assert breaker.allow()
    breaker.failure()  # one failure is enough while probing
    assert breaker.state == "open" and breaker.retry_in() == 10


def test_a_probe_that_tells_nothing_lets_another_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, cooldown=1, clock=clock)
    breaker.failure()
    clock.now += 1
    assert breaker.allow()
    breaker.release()  # cancelled, or a bad request: the provider's health is unknown
    assert breaker.allow()
