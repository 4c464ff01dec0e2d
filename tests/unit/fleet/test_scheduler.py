"""The scheduler on snapshots built by small factories: headroom, priority reserve, tier
and node fallback, tenants, exclusions, tie-breaking, and properties over random fleets."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inhouse.fleet.nodes import NodeKind, NodeLoad, NodeSnapshot, NodeSpec
from inhouse.fleet.scheduler import (
    DEFAULT_KV_BYTES_PER_TOKEN,
    MEMORY_HEADROOM,
    Placement,
    PriorityReserve,
    Refusal,
    estimate_kv_bytes,
    free_memory,
    has_headroom,
    kv_bytes_per_token,
    occupancy,
    schedule,
)
from inhouse.protocol.types import Priority, Tier

MODEL = "assistant"


def node(
    node_id: str,
    tier: Tier = Tier.EDGE,
    *,
    capacity: int = 16,
    running: int = 0,
    waiting: int = 0,
    in_flight: int = 0,
    memory_free: int | None = None,
    memory: int | None = None,
    kv_usage: float | None = None,
    cost: float = 0.0,
    fallback: bool = False,
    tenant: str | None = None,
    models: tuple[str, ...] = (MODEL,),
    available: bool = True,
) -> NodeSnapshot:
    spec = NodeSpec(
        id=node_id,
        name=node_id,
        url=f"http://{node_id}:8000/v1",
        tier=tier,
        kind=NodeKind.VLLM,
        models={m: m for m in models},
        capacity=capacity,
        memory_bytes=memory,
        cost_per_1k_tokens=cost,
        fallback=fallback,
        tenant_id=tenant,
    )
    load = NodeLoad(
        running=running, waiting=waiting, kv_cache_usage=kv_usage, memory_free_bytes=memory_free
    )
    return NodeSnapshot(spec, load, available=available, in_flight=in_flight)


def place(
    nodes: list[NodeSnapshot],
    *,
    tier: Tier = Tier.EDGE,
    priority: Priority = Priority.NORMAL,
    tenant: str | None = None,
    needed: int = 1000,
    exclude: frozenset[str] = frozenset(),
    reserve: PriorityReserve | None = None,
    model: str = MODEL,
) -> Placement | Refusal:
    return schedule(
        nodes,
        model=model,
        tier=tier,
        priority=priority,
        tenant_id=tenant,
        needed_bytes=needed,
        exclude=exclude,
        reserve=reserve,
    )


def chosen(result: Placement | Refusal) -> str:
    assert isinstance(result, Placement), result
    return result.node_id


# memory headroom


def test_headroom_of_exactly_one_point_two_times_passes_and_one_byte_less_fails() -> None:
    assert MEMORY_HEADROOM == 1.2
    assert chosen(place([node("a", memory_free=1200)], needed=1000)) == "a"
    refused = place([node("a", memory_free=1199)], needed=1000)
    assert refused == Refusal("no_memory_headroom", retryable=False)


def test_headroom_from_kv_cache_usage_when_free_memory_is_not_reported() -> None:
    at_edge = node("a", memory=2400, kv_usage=0.5)  # 1200 free
    assert free_memory(at_edge) == 1200
    assert chosen(place([at_edge], needed=1000)) == "a"
    short = node("a", memory=2398, kv_usage=0.5)  # 1199 free
    assert isinstance(place([short], needed=1000), Refusal)
    # reported free memory wins over the usage estimate
    reported = node("a", memory=10**9, kv_usage=0.0, memory_free=1199)
    assert isinstance(place([reported], needed=1000), Refusal)


def test_unknown_memory_passes_the_headroom_rule() -> None:
    for unknown in (node("a"), node("b", memory=10**9), node("c", kv_usage=0.99)):
        assert free_memory(unknown) is None
        assert has_headroom(unknown, 10**15)
        assert isinstance(place([unknown], needed=10**15), Placement)


def test_a_node_without_headroom_is_skipped_for_one_with_it() -> None:
    nodes = [node("a", memory_free=100), node("b", running=10, memory_free=5000)]
    assert chosen(place(nodes)) == "b"


# load, capacity and priority


def test_the_least_loaded_node_of_the_tier_wins() -> None:
    nodes = [node("a", running=8), node("b", running=3), node("c", running=5, waiting=1)]
    result = place(nodes)
    assert result == Placement("b", Tier.EDGE, "least_loaded", fell_back=False)


def test_spare_capacity_is_a_fraction_of_each_nodes_capacity() -> None:
    small = node("small", capacity=4, running=1)  # 75% spare
    big = node("big", capacity=64, running=32)  # 50% spare, more free slots
    assert chosen(place([big, small])) == "small"


def test_occupancy_counts_in_flight_requests_when_the_poll_is_behind() -> None:
    stale = node("a", running=2, in_flight=9)
    assert occupancy(stale) == 9
    assert chosen(place([stale, node("b", running=5)])) == "b"


def test_a_normal_request_is_refused_as_retryable_where_a_high_one_is_placed() -> None:
    # capacity 16: normal leaves 2 slots (1/8) for high, low leaves 4 (1/4)
    nodes = [node("a", running=14), node("b", tier=Tier.CENTER, running=14)]
    assert place(nodes, priority=Priority.NORMAL) == Refusal("at_capacity", retryable=True)
    assert chosen(place(nodes, priority=Priority.HIGH)) == "a"
    assert chosen(place([node("a", running=13)], priority=Priority.NORMAL)) == "a"
    assert isinstance(place([node("a", running=12)], priority=Priority.LOW), Refusal)
    assert chosen(place([node("a", running=11)], priority=Priority.LOW)) == "a"
    assert isinstance(place([node("a", running=16)], priority=Priority.HIGH), Refusal)


def test_the_reserve_is_configurable_and_rounds_down() -> None:
    reserve = PriorityReserve(normal=0.5, low=0.75)
    assert reserve.limit(Priority.HIGH, 16) == 16
    assert reserve.limit(Priority.NORMAL, 16) == 8
    assert reserve.limit(Priority.LOW, 16) == 4
    assert PriorityReserve().limit(Priority.NORMAL, 4) == 4  # 1/8 of 4 slots: none
    assert PriorityReserve().limit(Priority.LOW, 4) == 3
    assert isinstance(place([node("a", running=8)], reserve=reserve), Refusal)
    assert chosen(place([node("a", running=7)], reserve=reserve)) == "a"
    no_reserve = PriorityReserve(normal=0.0, low=0.0)
    assert chosen(place([node("a", running=15)], priority=Priority.LOW, reserve=no_reserve))


@pytest.mark.parametrize(("normal", "low"), [(-0.1, 0.2), (0.3, 0.2), (0.1, 1.0)])
def test_an_inconsistent_reserve_is_refused(normal: float, low: float) -> None:
    with pytest.raises(ValueError, match="normal"):
        PriorityReserve(normal=normal, low=low)


def test_a_node_of_zero_capacity_never_fits() -> None:
    assert place([node("a", capacity=0)]) == Refusal("at_capacity", retryable=True)


# fallback


def test_the_other_tier_serves_when_the_requested_one_is_full() -> None:
    nodes = [node("edge-1", running=16), node("center-1", tier=Tier.CENTER, running=15)]
    result = place(nodes, priority=Priority.HIGH)
    assert result == Placement("center-1", Tier.CENTER, "fallback_tier=center", fell_back=True)
    result = place(nodes, tier=Tier.CENTER, priority=Priority.HIGH)
    assert result == Placement("center-1", Tier.CENTER, "least_loaded", fell_back=False)
    nodes = [node("edge-1"), node("center-1", tier=Tier.CENTER, running=16)]
    result = place(nodes, tier=Tier.CENTER)
    assert result == Placement("edge-1", Tier.EDGE, "fallback_tier=edge", fell_back=True)


def test_a_fallback_node_is_used_only_when_nothing_else_qualifies() -> None:
    spare = node("spare", tier=Tier.EDGE, fallback=True)  # idle, cheapest
    busy_edge = node("edge-1", running=13)
    busy_center = node("center-1", tier=Tier.CENTER, running=13)
    assert chosen(place([spare, busy_edge, busy_center])) == "edge-1"
    assert chosen(place([spare, busy_center], tier=Tier.EDGE)) == "center-1"
    full = [spare, node("edge-1", running=14), node("center-1", tier=Tier.CENTER, running=14)]
    result = place(full)
    assert result == Placement("spare", Tier.EDGE, "fallback_node", fell_back=True)
    # a fallback node of the requested tier is still only a fallback
    assert place([spare], tier=Tier.EDGE) == Placement(
        "spare", Tier.EDGE, "fallback_node", fell_back=True
    )


# tie-breaking


def test_ties_are_broken_by_cost_then_by_id() -> None:
    nodes = [node("c", cost=0.2), node("b", cost=0.1), node("a", cost=0.2)]
    assert chosen(place(nodes)) == "b"
    nodes = [node("c", cost=0.2), node("a", cost=0.2)]
    assert chosen(place(nodes)) == "a"
    assert chosen(place(list(reversed(nodes)))) == "a"
    # load comes before cost
    nodes = [node("cheap", cost=0.0, running=1), node("dear", cost=9.0)]
    assert chosen(place(nodes)) == "dear"


# who may use a node


def test_tenant_owned_nodes_serve_only_their_tenant() -> None:
    own = node("own", tenant="acme")
    shared = node("shared", running=8)
    assert chosen(place([own, shared], tenant="acme")) == "own"
    assert chosen(place([own, shared], tenant="globex")) == "shared"
    assert chosen(place([own, shared], tenant=None)) == "shared"
    assert place([own], tenant="globex") == Refusal("no_node_for_tenant", retryable=False)


def test_excluded_nodes_are_not_tried_again() -> None:
    nodes = [node("a"), node("b", running=4)]
    assert chosen(place(nodes, exclude=frozenset({"a"}))) == "b"
    refused = place(nodes, exclude=frozenset({"a", "b"}))
    assert refused == Refusal("all_nodes_excluded", retryable=False)


def test_unavailable_nodes_and_other_models_are_skipped() -> None:
    nodes = [node("down", available=False), node("other", models=("coder",)), node("up")]
    assert chosen(place(nodes)) == "up"
    assert place(nodes[:1]) == Refusal("no_available_node", retryable=False)
    assert place(nodes, model="unknown") == Refusal("no_node_serves_model", retryable=False)
    assert place([]) == Refusal("no_node_serves_model", retryable=False)


def test_full_nodes_with_headroom_make_the_refusal_retryable() -> None:
    nodes = [node("full", running=16), node("no-room", memory_free=10)]
    assert place(nodes) == Refusal("at_capacity", retryable=True)
    assert place(nodes[1:]) == Refusal("no_memory_headroom", retryable=False)


def test_reasons_are_ascii() -> None:
    results = [
        place([node("a")]),
        place([node("a", running=16), node("b", tier=Tier.CENTER)]),
        place([node("a", fallback=True)]),
        place([node("a", running=16)]),
        place([]),
    ]
    assert all(result.reason.isascii() for result in results)


# the KV estimate


def test_estimate_kv_bytes() -> None:
    assert estimate_kv_bytes(1000, 500, 1024) == 1500 * 1024
    assert estimate_kv_bytes(10, 0) == 10 * DEFAULT_KV_BYTES_PER_TOKEN
    # Llama-3-70B: 80 layers, 8 KV heads of 128, 16-bit
    assert kv_bytes_per_token(80, 8, 128) == 320 * 1024
    assert kv_bytes_per_token(32, 32, 128) == DEFAULT_KV_BYTES_PER_TOKEN
    with pytest.raises(ValueError):
        estimate_kv_bytes(-1, 10, 1)
    with pytest.raises(ValueError):
        place([node("a")], needed=-1)


# properties over random fleets

snapshots = st.builds(
    lambda i, tier, capacity, used, free, fallback, tenant, available, cost: node(
        f"n{i}",
        tier,
        capacity=capacity,
        running=min(used, capacity + 2),
        memory_free=free,
        fallback=fallback,
        tenant=tenant,
        available=available,
        cost=cost,
    ),
    st.integers(0, 10**6),
    st.sampled_from(Tier),
    st.integers(0, 32),
    st.integers(0, 40),
    st.one_of(st.none(), st.integers(0, 5000)),
    st.booleans(),
    st.sampled_from([None, "acme", "globex"]),
    st.booleans(),
    st.sampled_from([0.0, 0.1, 0.2]),
)
fleets = st.lists(snapshots, max_size=12, unique_by=lambda s: s.spec.id)


@settings(max_examples=300, deadline=None)
@given(
    fleet=fleets,
    tier=st.sampled_from(Tier),
    priority=st.sampled_from(Priority),
    tenant=st.sampled_from([None, "acme"]),
    needed=st.integers(0, 4000),
    seed=st.integers(0, 2**32 - 1),
)
def test_a_placement_never_breaks_a_rule_and_ignores_input_order(
    fleet: list[NodeSnapshot],
    tier: Tier,
    priority: Priority,
    tenant: str | None,
    needed: int,
    seed: int,
) -> None:
    reserve = PriorityReserve()
    result = place(fleet, tier=tier, priority=priority, tenant=tenant, needed=needed)
    shuffled = list(fleet)
    random.Random(seed).shuffle(shuffled)
    assert place(shuffled, tier=tier, priority=priority, tenant=tenant, needed=needed) == result

    def fits(snapshot: NodeSnapshot) -> bool:
        spec = snapshot.spec
        free = snapshot.load.memory_free_bytes
        return (
            snapshot.available
            and spec.tenant_id in (None, tenant)
            and (free is None or free >= MEMORY_HEADROOM * needed)
            and occupancy(snapshot) < reserve.limit(priority, spec.capacity)
        )

    fitting = [s for s in fleet if fits(s)]
    if isinstance(result, Refusal):
        assert not fitting
        return
    placed = next(s for s in fleet if s.spec.id == result.node_id)
    assert fits(placed)
    assert placed.spec.tier is result.tier
    # no fitting node of a better group exists
    preferred = [s for s in fitting if not s.spec.fallback and s.spec.tier is tier]
    others = [s for s in fitting if not s.spec.fallback and s.spec.tier is not tier]
    group = preferred or others or fitting
    assert placed in group
    assert result.fell_back == (group is not preferred)

    def spare(s: NodeSnapshot) -> float:
        return (s.spec.capacity - occupancy(s)) / s.spec.capacity

    assert spare(placed) == max(spare(s) for s in group)


def test_a_busy_node_short_of_memory_makes_the_refusal_retryable() -> None:
    busy = node("busy", memory_free=100, running=3)
    assert place([busy], needed=1000) == Refusal("memory_busy", retryable=True)
    # idle and still short: waiting would not help
    assert place([node("idle", memory_free=100)], needed=1000) == Refusal(
        "no_memory_headroom", retryable=False
    )
