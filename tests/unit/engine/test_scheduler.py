"""The continuous-batching scheduler, as a pure state machine."""

from __future__ import annotations

import pytest

from inhouse.engine.scheduler import (
    QueueFullError,
    Scheduler,
    SchedulerLimits,
    SequenceSpec,
)
from inhouse.errors import InvalidRequestError
from inhouse.protocol.types import Priority


def spec(
    seq_id: int, prompt: int = 10, max_tokens: int = 10, priority: Priority = Priority.NORMAL
) -> SequenceSpec:
    return SequenceSpec(seq_id, prompt, max_tokens, priority)


def limits(**overrides: int) -> SchedulerLimits:
    values = {
        "max_running": 4,
        "max_tokens_in_flight": 1000,
        "max_waiting": 4,
        "max_prefill_tokens_per_step": 100,
    }
    values.update(overrides)
    return SchedulerLimits(**values)


def test_newcomers_join_between_steps_and_leave_when_finished() -> None:
    scheduler = Scheduler(limits())
    scheduler.add(spec(1), now=0)
    first = scheduler.schedule(now=0)
    assert (first.prefill, first.decode) == ((1,), ())

    scheduler.add(spec(2), now=1)
    second = scheduler.schedule(now=1)
    assert (second.prefill, second.decode) == ((2,), (1,))

    scheduler.update([1])
    third = scheduler.schedule(now=2)
    assert (third.prefill, third.decode) == ((), (2,))
    scheduler.update([2])
    assert scheduler.schedule(now=3).empty
    assert not scheduler.has_work()


def test_high_priority_is_admitted_before_earlier_normal_requests() -> None:
    scheduler = Scheduler(limits(max_running=1))
    scheduler.add(spec(1), now=0)
    scheduler.schedule(now=0)  # 1 runs; the single slot is taken
    scheduler.add(spec(2), now=1)
    scheduler.add(spec(3, priority=Priority.LOW), now=2)
    scheduler.add(spec(4, priority=Priority.HIGH), now=3)
    order = []
    for step in range(3):
        scheduler.update(list(scheduler.schedule(now=10 + step).decode))
        order.extend(scheduler.schedule(now=10 + step).prefill)
    assert order == [4, 2, 3]


def test_the_padded_cache_bound_holds_and_blocks_the_line() -> None:
    # rows x longest worst case <= 100 tokens in flight
    scheduler = Scheduler(limits(max_tokens_in_flight=100))
    scheduler.add(spec(1, prompt=20, max_tokens=20), now=0)  # 40
    scheduler.add(spec(2, prompt=40, max_tokens=20), now=0)  # 60: 2 x 60 = 120 > 100
    scheduler.add(spec(3, prompt=5, max_tokens=5), now=0)  # would fit, but waits its turn
    assert scheduler.schedule(now=0).prefill == (1,)
    assert scheduler.schedule(now=1).prefill == ()
    scheduler.update([1])
    assert scheduler.schedule(now=2).prefill == (2,)


def test_prefill_budget_spreads_long_prompts_over_steps() -> None:
    scheduler = Scheduler(limits(max_prefill_tokens_per_step=100))
    for seq_id in (1, 2, 3):
        scheduler.add(spec(seq_id, prompt=60, max_tokens=1), now=0)
    assert scheduler.schedule(now=0).prefill == (1,)  # 60 + 60 > 100
    assert scheduler.schedule(now=1).prefill == (2,)
    big = Scheduler(limits(max_prefill_tokens_per_step=10))
    big.add(spec(9, prompt=500, max_tokens=1), now=0)
    assert big.schedule(now=0).prefill == (9,)  # the first newcomer always goes


def test_a_full_line_is_refused_with_retry_after() -> None:
    scheduler = Scheduler(limits(max_running=1, max_waiting=1))
    scheduler.add(spec(1), now=0)  # a free running slot
    scheduler.add(spec(2), now=0)  # the one waiting place
    with pytest.raises(QueueFullError) as refused:
        scheduler.add(spec(3), now=0)
    assert refused.value.status_code == 429
    assert refused.value.retry_after_seconds > 0


def test_a_request_larger_than_the_engine_is_a_400() -> None:
    scheduler = Scheduler(limits(max_tokens_in_flight=100))
    with pytest.raises(InvalidRequestError):
        scheduler.add(spec(1, prompt=90, max_tokens=20), now=0)


def test_cancel_forgets_waiting_and_drops_running_at_the_next_step() -> None:
    scheduler = Scheduler(limits(max_running=1))
    scheduler.add(spec(1), now=0)
    scheduler.schedule(now=0)
    scheduler.add(spec(2), now=0)
    assert scheduler.cancel(2) is True  # waiting: gone now
    assert scheduler.waiting == 0
    assert scheduler.cancel(1) is False  # running: dropped next step
    plan = scheduler.schedule(now=1)
    assert plan.drop == (1,) and plan.decode == ()
    assert scheduler.running == 0


def test_oldest_wait_uses_the_given_clock() -> None:
    scheduler = Scheduler(limits(max_running=1))
    scheduler.add(spec(1), now=0)
    scheduler.schedule(now=0)
    scheduler.add(spec(2), now=5)
    assert scheduler.oldest_wait(now=12) == 7
