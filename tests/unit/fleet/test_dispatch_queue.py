"""The dispatch queue: priority order, FIFO within a class, bounds, removal, timeouts."""

from __future__ import annotations

from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inhouse.errors import RateLimitError
from inhouse.fleet.dispatch_queue import DispatchQueue
from inhouse.protocol.types import Priority

T = TypeVar("T")

HIGH, NORMAL, LOW = Priority.HIGH, Priority.NORMAL, Priority.LOW


def drain(queue: DispatchQueue[T]) -> list[T]:
    items: list[T] = []
    while (waiter := queue.pop()) is not None:
        items.append(waiter.item)
    return items


def test_high_before_normal_before_low_and_fifo_within_a_class() -> None:
    queue: DispatchQueue[str] = DispatchQueue(10)
    for now, (item, priority) in enumerate(
        [("n1", NORMAL), ("l1", LOW), ("h1", HIGH), ("n2", NORMAL), ("h2", HIGH), ("l2", LOW)]
    ):
        queue.push(item, priority, now=float(now))
    assert len(queue) == 6
    assert [queue.count(p) for p in (HIGH, NORMAL, LOW)] == [2, 2, 2]
    assert [w.item for w in queue.waiting()] == ["h1", "h2", "n1", "n2", "l1", "l2"]
    assert len(queue) == 6  # waiting() does not take them out
    assert drain(queue) == ["h1", "h2", "n1", "n2", "l1", "l2"]
    assert queue.pop() is None
    assert queue.peek() is None


def test_a_full_queue_raises_a_rate_limit_error() -> None:
    queue: DispatchQueue[int] = DispatchQueue(2, retry_after_seconds=3.0)
    queue.push(1, LOW, now=0.0)
    queue.push(2, LOW, now=0.0)
    with pytest.raises(RateLimitError) as caught:
        queue.push(3, HIGH, now=0.0)
    assert caught.value.status_code == 429
    assert caught.value.code == "dispatch_queue_full"
    assert caught.value.retry_after_seconds == 3.0
    queue.pop()
    queue.push(3, HIGH, now=1.0)  # room again
    assert len(queue) == 2


def test_a_waiter_that_gave_up_is_removed_once() -> None:
    queue: DispatchQueue[str] = DispatchQueue(5)
    a = queue.push("a", NORMAL, now=0.0)
    b = queue.push("b", NORMAL, now=0.0)
    queue.push("c", NORMAL, now=0.0)
    assert queue.remove(b)
    assert not queue.remove(b)
    assert [w.item for w in queue.waiting()] == ["a", "c"]
    assert queue.remove(a)
    head = queue.peek()
    assert head is not None and head.item == "c"
    assert queue.count(NORMAL) == 1
    assert drain(queue) == ["c"]


def test_removing_while_walking_the_waiters() -> None:
    queue: DispatchQueue[str] = DispatchQueue(10)
    for item in "abcdef":
        queue.push(item, HIGH if item in "ce" else NORMAL, now=0.0)
    placed = []
    for waiter in queue.waiting():
        if waiter.item in "cab":
            queue.remove(waiter.ticket)
            placed.append(waiter.item)
    assert placed == ["c", "a", "b"]
    assert drain(queue) == ["e", "d", "f"]


def test_wait_times_and_timeouts_follow_the_clock_given() -> None:
    queue: DispatchQueue[str] = DispatchQueue(10)
    queue.push("patient", NORMAL, now=0.0)
    queue.push("hasty", NORMAL, now=1.0, timeout=2.0)
    queue.push("urgent", HIGH, now=2.0, timeout=0.5)
    assert queue.next_deadline() == 2.5
    assert queue.expire(2.4) == []
    expired = queue.expire(2.5)  # at the deadline: out
    assert [w.item for w in expired] == ["urgent"]
    assert expired[0].waited(2.5) == 0.5
    assert queue.next_deadline() == 3.0
    assert [w.item for w in queue.expire(10.0)] == ["hasty"]
    assert queue.next_deadline() is None
    waiter = queue.pop()
    assert waiter is not None and waiter.item == "patient" and waiter.waited(7.0) == 7.0


def test_a_removed_waiter_does_not_expire() -> None:
    queue: DispatchQueue[str] = DispatchQueue(10)
    ticket = queue.push("a", NORMAL, now=0.0, timeout=1.0)
    queue.push("b", NORMAL, now=0.0, timeout=5.0)
    queue.remove(ticket)
    assert queue.next_deadline() == 5.0
    assert queue.expire(2.0) == []


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        DispatchQueue[str](0)
    with pytest.raises(ValueError):
        DispatchQueue[str](1).push("a", NORMAL, now=0.0, timeout=-1.0)


def test_a_long_lived_head_does_not_let_removed_waiters_pile_up() -> None:
    queue: DispatchQueue[int] = DispatchQueue(100)
    queue.push(-1, LOW, now=0.0)  # stays at the head throughout
    for i in range(10_000):
        ticket = queue.push(i, LOW, now=float(i))
        queue.remove(ticket)
    assert len(queue) == 1
    assert len(queue._lanes[LOW].items) < 100
    assert drain(queue) == [-1]


operations = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.sampled_from(Priority)),
        st.tuples(st.just("pop"), st.just(HIGH)),
        st.tuples(st.just("remove"), st.integers(0, 50)),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(operations)
def test_the_queue_agrees_with_a_sorted_list(ops: list[tuple[str, object]]) -> None:
    queue: DispatchQueue[int] = DispatchQueue(20)
    model: list[tuple[int, int]] = []  # (priority, seq) in the order the model serves them
    tickets = {}
    for number, (op, arg) in enumerate(ops):
        if op == "push":
            assert isinstance(arg, Priority)
            if len(model) == 20:
                with pytest.raises(RateLimitError):
                    queue.push(number, arg, now=0.0)
                continue
            tickets[number] = queue.push(number, arg, now=0.0)
            model.append((int(arg), number))
        elif op == "pop":
            waiter = queue.pop()
            expected = min(model) if model else None
            assert (waiter.item if waiter else None) == (expected[1] if expected else None)
            if expected:
                model.remove(expected)
        else:
            assert isinstance(arg, int)
            keys = sorted(tickets)
            if keys:
                key = keys[arg % len(keys)]
                live = any(seq == key for _, seq in model)
                assert queue.remove(tickets[key]) == live
                model = [entry for entry in model if entry[1] != key]
        assert len(queue) == len(model)
        assert [w.item for w in queue.waiting()] == [seq for _, seq in sorted(model)]
