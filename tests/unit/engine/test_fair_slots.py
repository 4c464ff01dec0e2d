"""Fair share of running slots: the pure rule, and the scheduler that applies it."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from inhouse.engine.fair_slots import Head, next_head, share_cap, targets
from inhouse.engine.scheduler import Scheduler, SchedulerLimits, SequenceSpec
from inhouse.protocol.types import Priority


def test_targets_give_each_its_share_and_the_rest_only_to_a_lone_asker() -> None:
    assert targets({"a": 10, "b": 8}, slots=10, cap=3) == {"a": 3, "b": 3}
    assert targets({"a": 12, "b": 2}, slots=10, cap=3) == {"a": 8, "b": 2}
    assert targets({"a": 2, "b": 1}, slots=10, cap=3) == {"a": 2, "b": 1}
    assert targets({"a": 40}, slots=10, cap=3) == {"a": 10}


def test_the_cap_rounds_down_and_is_never_zero() -> None:
    assert share_cap(10, 0.30) == 3
    assert share_cap(32, 0.30) == 9
    assert share_cap(4, 0.30) == 1
    assert share_cap(10, 1.0) == 10


def test_a_capped_group_waits_while_another_waits_but_not_when_alone() -> None:
    heads = [Head("a", 1, 0), Head("b", 1, 5)]
    assert next_head(heads, {"a": 3, "b": 3}, cap=3) is None
    assert next_head(heads, {"a": 3, "b": 1}, cap=3) == heads[1]
    assert next_head([Head("a", 1, 0)], {"a": 9}, cap=3) == Head("a", 1, 0)


def test_priority_first_then_fewest_slots_per_weight_then_arrival() -> None:
    high = Head("c", 0, 9)
    assert next_head([Head("a", 1, 0), high], {"a": 0, "c": 2}, cap=3) == high
    # a holds 1 with weight 2 (half a slot per weight), b holds 1 with weight 1: a first
    a, b = Head("a", 1, 5, weight=2.0), Head("b", 1, 0)
    assert next_head([a, b], {"a": 1, "b": 1}, cap=5) == a
    assert next_head([a, b], {"a": 2, "b": 1}, cap=5) == b  # even: the earlier arrival
    assert next_head([Head("a", 1, 7), Head("b", 1, 3)], {}, cap=5) == Head("b", 1, 3)


def spec(seq_id: int, group: str, priority: Priority = Priority.NORMAL) -> SequenceSpec:
    return SequenceSpec(seq_id, 10, 10, priority, group=group)


def scheduler(max_running: int = 10, max_share: float = 0.3) -> Scheduler:
    return Scheduler(
        SchedulerLimits(
            max_running=max_running,
            max_tokens_in_flight=100_000,
            max_waiting=1000,
            max_prefill_tokens_per_step=100_000,
            max_share=max_share,
        )
    )


def test_three_tenants_saturating_each_hold_at_most_the_cap() -> None:
    s = scheduler()
    seq = iter(range(1000))
    for group in "abc":
        for _ in range(8):
            s.add(spec(next(seq), group), now=0)
    plan = s.schedule(now=0)
    assert len(plan.prefill) == 9  # three each: the tenth slot stays free while all wait
    assert s.running_by_group() == {"a": 3, "b": 3, "c": 3}
    # a finishes one: a gets the slot back (the others are at their cap too)
    first_a = next(i for i in plan.prefill if i < 8)
    s.update([first_a])
    s.schedule(now=1)
    assert s.running_by_group() == {"a": 3, "b": 3, "c": 3}


def test_a_lone_tenant_uses_every_slot_and_gives_back_the_excess_when_others_wait() -> None:
    s = scheduler()
    for seq_id in range(12):
        s.add(spec(seq_id, "a"), now=0)
    s.schedule(now=0)
    assert s.running_by_group() == {"a": 10}  # work-conserving: nobody else waits
    s.add(spec(100, "b"), now=1)
    s.add(spec(101, "b"), now=1)
    plan = s.schedule(now=1)
    # b waits and no slot is free: a's two newest give theirs back; a, then the only
    # group still asking for more, keeps the rest
    assert plan.preempt == (9, 8) and set(plan.prefill) == {100, 101}
    assert s.running_by_group() == {"a": 8, "b": 2}
    assert s.waiting_by_group() == {"a": 4}
    s.update([100, 101])  # b is done: a, alone again, takes its preempted ones first
    plan = s.schedule(now=2)
    assert plan.prefill == (8, 9) and s.running_by_group() == {"a": 10}


def test_a_group_above_its_share_gives_back_all_the_excess_while_another_waits() -> None:
    s = scheduler()
    for seq_id in range(10):
        s.add(spec(seq_id, "a"), now=0)
    s.schedule(now=0)
    for seq_id in range(100, 108):
        s.add(spec(seq_id, "b"), now=1)
    plan = s.schedule(now=1)
    assert plan.preempt == (9, 8, 7, 6, 5, 4, 3)  # a keeps its share: 3 of 10
    assert s.running_by_group() == {"a": 3, "b": 3}  # b, too: 4 slots stay free
    assert s.schedule(now=2).preempt == ()


@given(
    st.lists(
        st.tuples(st.sampled_from("abcd"), st.sampled_from(list(Priority))),
        min_size=1,
        max_size=60,
    ),
    st.integers(min_value=1, max_value=16),
    st.floats(min_value=0.1, max_value=1.0),
)
def test_no_group_exceeds_the_cap_while_another_waits(
    arrivals: list[tuple[str, Priority]], max_running: int, max_share: float
) -> None:
    s = scheduler(max_running, max_share)
    cap = share_cap(max_running, max_share)
    for seq_id, (group, priority) in enumerate(arrivals):
        s.add(spec(seq_id, group, priority), now=0)
    held: Counter[str] = Counter()
    for step in range(len(arrivals) + 1):
        before = Counter(s.running_by_group())
        plan = s.schedule(now=step)
        after = Counter(s.running_by_group())
        waiting = s.waiting_by_group()
        for group, count in after.items():
            grew = count > before[group]
            others_wait = any(n for g, n in waiting.items() if g != group)
            if grew and others_wait:
                assert count <= cap
        # work-conserving: a free slot is only left while every waiting group is capped
        if s.waiting and s.running < max_running:
            assert all(after[g] >= cap for g in waiting) and len(waiting) > 1
        # after each step, no group holds more than its share while another waits
        for group, count in after.items():
            if any(g != group for g in waiting):
                assert count <= cap
        held = after
        if plan.decode:
            s.update(plan.decode[:1])  # the oldest finishes, so the line moves
    assert sum(held.values()) <= max_running
