"""The fair-share allocator: worked examples, and properties over random clusters.

The properties check results against an oracle that recomputes every rule in exact
arithmetic (``Fraction``) from the final state. Generated amounts are quarter cores,
quarter GiB and whole GPUs, and caps whole percents, so that exact and float arithmetic
agree on every boundary.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inhouse.errors import InvalidRequestError
from inhouse.tenancy.fair_share import (
    Allocation,
    Blocker,
    Resource,
    Resources,
    TenantLimits,
    WorkItem,
    WorkKind,
    allocate,
)
from inhouse.tenancy.quotas import Quota

GIB = 1 << 30
TENANTS = ("a", "b", "c", "d")
PROPERTY = settings(max_examples=200, deadline=None)


def job(
    item_id: str,
    tenant_id: str,
    cpu: float = 0.0,
    memory_gib: float = 0.0,
    gpus: int = 0,
    *,
    priority: int = 0,
    sequence: int = 0,
) -> WorkItem:
    demand = Resources(cpu, int(memory_gib * GIB), gpus)
    return WorkItem(item_id, tenant_id, WorkKind.DEPLOYMENT, demand, priority, sequence)


def stream(tenant_id: str, count: int, cpu: float, memory_gib: float = 0.0) -> list[WorkItem]:
    return [job(f"{tenant_id}{n}", tenant_id, cpu, memory_gib, sequence=n) for n in range(count)]


def ids(items: Sequence[WorkItem]) -> list[str]:
    return [item.id for item in items]


def reasons(allocation: Allocation) -> dict[str, str]:
    return {waiting.item.id: waiting.reason for waiting in allocation.waiting}


# Worked examples


def test_drf_gives_each_tenant_the_same_dominant_share() -> None:
    """The example of the DRF paper (Ghodsi et al., 2011): 9 cores and 18 GiB; A's tasks
    need <1 core, 4 GiB>, B's <3 cores, 1 GiB>. A gets 3 tasks, B 2: two thirds each."""
    queue = [*stream("a", 10, 1.0, 4), *stream("b", 10, 3.0, 1)]
    tenants = {"a": TenantLimits(), "b": TenantLimits()}
    result = allocate(Resources(9.0, 18 * GIB), tenants, [], queue, cap_fraction=1.0)

    assert ids(result.placed) == ["a0", "b0", "a1", "b1", "a2"]
    assert result.usage == {"a": Resources(3.0, 12 * GIB), "b": Resources(6.0, 2 * GIB)}
    assert result.free == Resources(0.0, 4 * GIB)
    assert reasons(result)["a3"] == "not enough free capacity: needs 1 core, 0 cores free"
    assert reasons(result)["b2"] == "not enough free capacity: needs 3 cores, 0 cores free"


def test_limits_the_cap_and_free_capacity_each_hold_work_back_with_a_reason() -> None:
    capacity = Resources(20.0, 100 * GIB, gpus=8)  # default cap: 6 cores, 30 GiB, 2 GPUs
    tenants = {"a": TenantLimits(cpu=4.0), "b": TenantLimits(), "c": TenantLimits()}
    running = [job("r-c", "c", 12.0)]  # over the cap already: c gets nothing more
    queue = [
        job("a-big", "a", 3.0, sequence=1),
        job("a-small", "a", 2.0, sequence=2),
        job("a-tiny", "a", 1.0, sequence=3),
        job("b-gpus", "b", 1.0, 4, gpus=3, sequence=4),
        job("b-mem", "b", 1.0, 32, sequence=5),
        job("b-fits", "b", 1.0, 8, gpus=2, sequence=6),
        job("c-any", "c", 0.0, 1, sequence=7),
        job("b-late", "b", 4.0, sequence=8),
    ]
    result = allocate(capacity, tenants, running, queue)

    assert ids(result.placed) == ["a-big", "b-fits", "a-tiny"]
    assert reasons(result) == {
        "b-gpus": "tenant 'b' would hold 3 GPUs, over the 30% cluster cap of 2 GPUs",
        "a-small": "tenant 'a' would hold 5 cores, over its cpu limit of 4 cores",
        "b-mem": "tenant 'b' would hold 32 GiB memory, over the 30% cluster cap of 30 GiB memory",
        "b-late": "not enough free capacity: needs 4 cores, 3 cores free",
        "c-any": "tenant 'c' would hold 12 cores, over the 30% cluster cap of 6 cores",
    }
    assert {w.item.id: (w.blocker, w.resource) for w in result.waiting}["a-small"] == (
        Blocker.TENANT_LIMIT,
        Resource.CPU,
    )
    assert result.usage == {
        "a": Resources(4.0, 0),
        "b": Resources(1.0, 8 * GIB, 2),
        "c": Resources(12.0),
    }


def test_a_heavier_weight_gets_a_proportionally_larger_share() -> None:
    queue = [*stream("a", 10, 1.0), *stream("b", 10, 1.0)]
    tenants = {"a": TenantLimits(weight=2.0), "b": TenantLimits()}
    result = allocate(Resources(9.0, GIB), tenants, [], queue, cap_fraction=1.0)
    assert result.usage == {"a": Resources(6.0), "b": Resources(3.0)}


def test_a_tenant_goes_by_priority_then_submission() -> None:
    queue = [
        job("late-urgent", "a", 1.0, priority=0, sequence=9),
        job("early", "a", 1.0, priority=1, sequence=1),
        job("later", "a", 1.0, priority=1, sequence=2),
    ]
    result = allocate(Resources(2.0), {"a": TenantLimits()}, [], queue, cap_fraction=1.0)
    assert ids(result.placed) == ["late-urgent", "early"]
    assert ids([w.item for w in result.waiting]) == ["later"]


def test_the_cap_rounds_whole_gpus_down_and_takes_the_fraction_as_written() -> None:
    tenants = {"a": TenantLimits()}
    queue = [job(f"g{n}", "a", gpus=1, sequence=n) for n in range(5)]
    on_ten = allocate(Resources(1.0, GIB, gpus=10), tenants, [], queue)
    on_eight = allocate(Resources(1.0, GIB, gpus=8), tenants, [], queue)
    assert on_ten.usage["a"].gpus == 3  # 30% of 10, although 0.3 * 10 < 3 in binary
    assert on_eight.usage["a"].gpus == 2  # 2.4 rounded down


def test_resources_add_subtract_and_compare_per_dimension() -> None:
    small, large = Resources(1.5, GIB), Resources(2.0, 4 * GIB, gpus=1)
    assert small + large == Resources(3.5, 5 * GIB, 1)
    assert large - small == Resources(0.5, 3 * GIB, 1)
    assert small.fits_within(large)
    assert not large.fits_within(small)
    assert not Resources(1.0, gpus=1).fits_within(Resources(8.0, 8 * GIB))
    assert Resources(0.1 + 0.2).fits_within(Resources(0.3))  # float drift is not "over"


@pytest.mark.parametrize(
    ("capacity", "tenants", "queue", "cap_fraction", "message"),
    [
        (Resources(1.0), {"a": TenantLimits()}, [], 0.0, "cap_fraction must be in (0, 1]"),
        (Resources(1.0), {"a": TenantLimits()}, [], 1.5, "cap_fraction must be in (0, 1]"),
        (Resources(1.0), {"a": TenantLimits()}, [], float("nan"), "cap_fraction"),
        (Resources(-1.0), {"a": TenantLimits()}, [], 0.3, "cluster capacity: cpu"),
        (
            Resources(1.0),
            {"a": TenantLimits(weight=0.0)},
            [],
            0.3,
            "weight must be a positive number",
        ),
        (Resources(1.0), {"a": TenantLimits(memory=-1)}, [], 0.3, "tenant 'a' limit: memory"),
        (Resources(1.0), {"a": TenantLimits()}, [job("x", "a", -1.0)], 0.3, "'x' demand: cpu"),
        (Resources(1.0), {"a": TenantLimits()}, [job("x", "a", float("inf"))], 0.3, "finite"),
        (Resources(1.0), {"a": TenantLimits()}, [job("x", "z")], 0.3, "unknown tenant 'z'"),
        (Resources(1.0), {"a": TenantLimits()}, [job("x", "a")] * 2, 0.3, "'x' appears twice"),
    ],
)
def test_invalid_input_is_refused_with_a_clear_message(
    capacity: Resources,
    tenants: dict[str, TenantLimits],
    queue: list[WorkItem],
    cap_fraction: float,
    message: str,
) -> None:
    with pytest.raises(InvalidRequestError, match=re.escape(message)):
        allocate(capacity, tenants, [], queue, cap_fraction=cap_fraction)


# Properties


@dataclass(frozen=True)
class Scenario:
    capacity: Resources
    tenants: dict[str, TenantLimits]
    running: list[WorkItem]
    queue: list[WorkItem]
    percent: int

    def run(self, queue: Sequence[WorkItem] | None = None) -> Allocation:
        queue = self.queue if queue is None else queue
        fraction = self.percent / 100
        return allocate(self.capacity, self.tenants, self.running, queue, cap_fraction=fraction)

    def cap(self, resource: Resource) -> Fraction:
        return Fraction(self.capacity.amount(resource)) * Fraction(self.percent, 100)


def amounts(
    max_quarter_cores: int, max_quarter_gib: int, gpus: st.SearchStrategy[int]
) -> st.SearchStrategy[Resources]:
    return st.builds(
        Resources,
        st.integers(0, max_quarter_cores).map(lambda quarters: quarters / 4),
        st.integers(0, max_quarter_gib).map(lambda quarters: quarters * GIB // 4),
        gpus,
    )


demands = amounts(32, 32, st.sampled_from([0, 0, 0, 1, 2]))
percents = st.sampled_from([30, 100]) | st.integers(1, 100)
limits = st.builds(
    TenantLimits,
    st.none() | st.integers(0, 128).map(lambda quarters: quarters / 4),
    st.none() | st.integers(0, 128).map(lambda quarters: quarters * GIB // 4),
    st.none() | st.integers(0, 4),
    st.sampled_from([1.0, 0.5, 2.0, 3.0]),
)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    tenant_ids = TENANTS[: draw(st.integers(1, len(TENANTS)))]
    tenants = {tenant_id: draw(limits) for tenant_id in tenant_ids}
    work = st.tuples(st.sampled_from(tenant_ids), demands, st.integers(0, 2))
    running = [
        WorkItem(f"r{n}", tenant_id, WorkKind.DEPLOYMENT, demand)
        for n, (tenant_id, demand, _) in enumerate(draw(st.lists(work, max_size=6)))
    ]
    queue = [
        WorkItem(f"q{n}", tenant_id, kind, demand, priority, sequence=n)
        for n, ((tenant_id, demand, priority), kind) in enumerate(
            draw(st.lists(st.tuples(work, st.sampled_from(WorkKind)), max_size=24))
        )
    ]
    capacity = draw(amounts(256, 256, st.integers(0, 8)))
    return Scenario(capacity, tenants, running, queue, draw(percents))


def total(items: Sequence[WorkItem], tenant_id: str | None = None) -> Resources:
    selected = [item.demand for item in items if tenant_id in (None, item.tenant_id)]
    return sum(selected, Resources())


def fits(usage: Resources, bound: Resources) -> bool:
    return all(Fraction(usage.amount(r)) <= Fraction(bound.amount(r)) for r in Resource)


def exceeds(scenario: Scenario, tenant_id: str, usage: Resources) -> set[tuple[Blocker, Resource]]:
    """The tenant's limits and cap that ``usage`` breaks, in exact arithmetic."""
    broken = set()
    for resource in Resource:
        held = Fraction(usage.amount(resource))
        limit = scenario.tenants[tenant_id].limit(resource)
        if limit is not None and held > Fraction(limit):
            broken.add((Blocker.TENANT_LIMIT, resource))
        if held > scenario.cap(resource):
            broken.add((Blocker.CLUSTER_CAP, resource))
    return broken


@given(scenarios())
@PROPERTY
def test_every_item_is_placed_or_waits_once_and_the_totals_add_up(scenario: Scenario) -> None:
    result = scenario.run()
    assert sorted(ids(result.placed) + [w.item.id for w in result.waiting]) == sorted(
        ids(scenario.queue)
    )
    everything = scenario.running + list(result.placed)
    for tenant_id in scenario.tenants:
        assert result.usage[tenant_id] == total(everything, tenant_id)
    assert result.free == scenario.capacity - total(everything)


@given(scenarios())
@PROPERTY
def test_no_tenant_goes_over_its_limits_or_the_cap(scenario: Scenario) -> None:
    result = scenario.run()
    for tenant_id in scenario.tenants:
        if exceeds(scenario, tenant_id, total(scenario.running, tenant_id)):
            assert not [item for item in result.placed if item.tenant_id == tenant_id]
        else:
            assert exceeds(scenario, tenant_id, result.usage[tenant_id]) == set()


@given(scenarios())
@PROPERTY
def test_placed_work_never_exceeds_the_cluster(scenario: Scenario) -> None:
    result = scenario.run()
    if fits(total(scenario.running), scenario.capacity):
        assert fits(total(scenario.running + list(result.placed)), scenario.capacity)
    else:
        assert result.placed == ()


@given(scenarios())
@PROPERTY
def test_every_waiting_item_breaks_the_rule_its_reason_names(scenario: Scenario) -> None:
    """No capacity is left idle while an item that would fit waits."""
    result = scenario.run()
    for waiting in result.waiting:
        item, resource = waiting.item, waiting.resource
        broken = exceeds(scenario, item.tenant_id, result.usage[item.tenant_id] + item.demand)
        if Fraction(item.demand.amount(resource)) > Fraction(result.free.amount(resource)):
            broken.add((Blocker.FREE_CAPACITY, resource))
        assert (waiting.blocker, resource) in broken, waiting.reason
        if waiting.blocker is Blocker.TENANT_LIMIT:
            assert f"tenant {item.tenant_id!r}" in waiting.reason
            assert f"over its {resource} limit" in waiting.reason
        elif waiting.blocker is Blocker.CLUSTER_CAP:
            assert f"tenant {item.tenant_id!r}" in waiting.reason
            assert f"over the {scenario.percent}% cluster cap" in waiting.reason
        else:
            assert waiting.reason.startswith("not enough free capacity: needs ")


@given(scenarios(), st.randoms(use_true_random=False))
@PROPERTY
def test_the_result_does_not_depend_on_the_order_of_the_queue(
    scenario: Scenario, rng: random.Random
) -> None:
    shuffled = list(scenario.queue)
    rng.shuffle(shuffled)
    assert scenario.run(shuffled) == scenario.run()


def twin_streams(demand: Resources, count: int, a_first: list[bool]) -> list[WorkItem]:
    """``count`` items of ``demand`` each for tenants a and b; who submits first varies."""
    queue = []
    for n in range(count):
        first, second = ("a", "b") if a_first[n] else ("b", "a")
        for offset, tenant_id in enumerate((first, second)):
            kind = WorkKind.TRAINING
            queue.append(WorkItem(f"{tenant_id}{n}", tenant_id, kind, demand, 0, 2 * n + offset))
    return queue


@given(
    capacity=amounts(256, 256, st.integers(0, 8)),
    demand=demands,
    count=st.integers(1, 40),
    limit=limits.map(lambda tenant: TenantLimits(tenant.cpu, tenant.memory, tenant.gpus)),
    percent=percents,
    a_first=st.lists(st.booleans(), min_size=40, max_size=40),
)
@PROPERTY
def test_equal_tenants_with_identical_streams_end_within_one_item(
    capacity: Resources,
    demand: Resources,
    count: int,
    limit: TenantLimits,
    percent: int,
    a_first: list[bool],
) -> None:
    tenants = {"a": limit, "b": limit}
    queue = twin_streams(demand, count, a_first)
    result = allocate(capacity, tenants, [], queue, cap_fraction=percent / 100)
    placed_a = len([item for item in result.placed if item.tenant_id == "a"])
    assert abs(placed_a - (len(result.placed) - placed_a)) <= 1


@given(
    capacity=amounts(256, 256, st.integers(0, 8)),
    demand=demands,
    count=st.integers(1, 40),
    weights=st.tuples(st.sampled_from([1.0, 2.0, 3.0]), st.sampled_from([1.0, 2.0, 3.0])),
    a_first=st.lists(st.booleans(), min_size=40, max_size=40),
)
@PROPERTY
def test_weighted_tenants_with_identical_streams_end_within_one_item_of_their_weights(
    capacity: Resources,
    demand: Resources,
    count: int,
    weights: tuple[float, float],
    a_first: list[bool],
) -> None:
    """While both still want more, neither is ahead in placed items per unit of weight
    by more than one of its own items."""
    tenants = {"a": TenantLimits(weight=weights[0]), "b": TenantLimits(weight=weights[1])}
    result = allocate(capacity, tenants, [], twin_streams(demand, count, a_first), cap_fraction=1.0)
    if {w.item.tenant_id for w in result.waiting} != {"a", "b"}:
        return  # one got all it asked for: the other may take the rest
    placed = {t: len([item for item in result.placed if item.tenant_id == t]) for t in tenants}
    weight_a, weight_b = weights  # (placed_a - 1) / weight_a <= placed_b / weight_b, exactly:
    assert (placed["a"] - 1) * weight_b <= placed["b"] * weight_a
    assert (placed["b"] - 1) * weight_a <= placed["a"] * weight_b


def test_limits_come_from_the_tenants_quota() -> None:
    quota = Quota(cpu_limit=0.5, memory_limit=32 * GIB, tokens_per_day=10)
    assert TenantLimits.from_quota(quota, weight=2.0) == TenantLimits(
        cpu=0.5, memory=32 * GIB, weight=2.0
    )
