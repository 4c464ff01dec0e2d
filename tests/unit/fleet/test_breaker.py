"""The circuit breaker as a state machine on a hand-driven clock."""

from __future__ import annotations

import pytest

from inhouse.fleet.breaker import BreakerState, CircuitBreaker


def opened(breaker: CircuitBreaker, now: float) -> None:
    for _ in range(breaker.failure_threshold):
        breaker.record_failure(now)
    assert breaker.state(now) is BreakerState.OPEN


def test_threshold_consecutive_failures_open_it_and_a_success_resets_the_count() -> None:
    breaker = CircuitBreaker(failure_threshold=3, cooldown_seconds=5, max_cooldown_seconds=60)
    breaker.record_failure(0)
    breaker.record_failure(0)
    breaker.record_success(0)  # not consecutive any more
    breaker.record_failure(1)
    breaker.record_failure(1)
    assert breaker.state(1) is BreakerState.CLOSED and breaker.allow(1)
    breaker.record_failure(1)
    assert breaker.state(1) is BreakerState.OPEN
    assert not breaker.allow(1) and not breaker.available(1)


def test_open_for_the_cooldown_then_exactly_one_probe_at_a_time() -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_seconds=5, max_cooldown_seconds=60)
    opened(breaker, 10)
    assert breaker.state(14.9) is BreakerState.OPEN and not breaker.allow(14.9)
    assert breaker.state(15) is BreakerState.HALF_OPEN
    assert breaker.available(15)  # peeking does not take the probe
    assert breaker.available(15)
    assert breaker.allow(15)  # the probe
    assert not breaker.allow(15.1) and not breaker.available(15.1)  # one at a time
    breaker.record_success(16)
    assert breaker.state(16) is BreakerState.CLOSED
    assert all(breaker.allow(16) for _ in range(10))


def test_a_failed_probe_reopens_with_the_cooldown_doubled_up_to_the_max() -> None:
    breaker = CircuitBreaker(failure_threshold=2, cooldown_seconds=5, max_cooldown_seconds=18)
    opened(breaker, 0)
    now, cooldowns = 0.0, []
    for _ in range(4):
        now += breaker.cooldown
        assert breaker.allow(now)
        breaker.record_failure(now)
        cooldowns.append(breaker.cooldown)
        assert breaker.state(now + breaker.cooldown - 0.01) is BreakerState.OPEN
    assert cooldowns == [10, 18, 18, 18]
    now += breaker.cooldown
    assert breaker.allow(now)
    breaker.record_success(now)
    assert breaker.cooldown == 5  # back to the base: the next ejection rests 5 s again
    opened(breaker, now)
    assert breaker.state(now + 5) is BreakerState.HALF_OPEN


def test_outcomes_reported_while_open_change_nothing() -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_seconds=5, max_cooldown_seconds=60)
    opened(breaker, 0)
    breaker.record_success(1)  # a request sent before the node was ejected
    breaker.record_failure(2)
    assert breaker.state(4.9) is BreakerState.OPEN
    assert breaker.state(5) is BreakerState.HALF_OPEN  # not extended by the late failure


def test_a_probe_that_never_reports_frees_its_slot_after_the_max_cooldown() -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_seconds=1, max_cooldown_seconds=30)
    opened(breaker, 0)
    assert breaker.allow(1)
    assert not breaker.allow(30.9)
    assert breaker.allow(31)


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0, cooldown_seconds=1, max_cooldown_seconds=1)
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=1, cooldown_seconds=0, max_cooldown_seconds=1)
