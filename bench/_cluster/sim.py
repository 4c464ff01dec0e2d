"""The discrete-event loop: arrivals from the trace, node events from a heap."""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from _cluster.fleet import MODEL, FleetProfile
from _cluster.node import Job, SimNode, Window
from _cluster.policies import Policy, dispatcher
from _cluster.workload import Request
from inhouse.fleet.router import RequestProfile, RoutingPolicy, route
from inhouse.fleet.scheduler import PriorityReserve, estimate_kv_bytes
from inhouse.protocol.types import Tier


@dataclass(frozen=True, slots=True)
class SimConfig:
    profile: FleetProfile
    routing: RoutingPolicy = field(default_factory=RoutingPolicy)
    reserve: PriorityReserve = field(default_factory=PriorityReserve)
    queue_length: int = 1_000_000
    """Bounded, as in the gateway, but long enough that no request is refused: the
    simulation compares waits, not refusals."""
    node_priority: bool = True
    """With our policy, nodes prefill waiting prompts in priority order (the request's
    priority is passed on: inhouse's engine admits by priority, vLLM does with
    ``--scheduling-policy priority``). The baselines ignore priorities: FIFO."""
    warmup_fraction: float = 0.05
    warmup_s: float = 60.0
    """Requests arriving in the first part of the trace (this fraction of it, at least
    ``warmup_s`` but at most a quarter) warm the fleet up and are left out of the
    statistics: an empty fleet takes about one request's lifetime to fill."""


@dataclass(frozen=True, slots=True)
class Run:
    """One policy at one load: every job as it ended, and every node's counters."""

    policy: Policy
    load: float
    rate: float
    """Requests per second: ``load`` x the fleet's capacity."""
    jobs: tuple[Job, ...]
    nodes: tuple[SimNode, ...]
    window: Window
    end: float
    """When the last request finished."""
    rejected: int


def profile_of(request: Request) -> RequestProfile:
    return RequestProfile(
        model=MODEL,
        prompt_tokens=request.prompt_tokens,
        turns=request.turns,
        max_tokens=request.max_tokens,
        tasks=request.tasks,
        priority=request.priority,
    )


def capacity_rate(trace: Sequence[Request], profile: FleetProfile) -> float:
    """Requests per second the fleet serves with every node at full batch, each node
    taking the trace's average request: the 100% of the loads."""
    rate = 0.0
    for kind, count in ((profile.center, profile.center_nodes), (profile.edge, profile.edge_nodes)):
        seconds = sum(kind.full_batch_seconds(r.prompt_tokens, r.output_tokens) for r in trace)
        rate += count * len(trace) / seconds
    return rate


def simulate(
    trace: Sequence[Request], policy: Policy, load: float, config: SimConfig, rate: float
) -> Run:
    """Serve ``trace`` at ``rate`` requests per second (``load`` is only recorded)."""
    profile = config.profile
    arrivals = [request.at / rate for request in trace]
    last = arrivals[-1]
    warm = min(max(config.warmup_fraction * last, config.warmup_s), 0.25 * last)
    window = Window(warm, last)
    touched: list[SimNode] = []
    pairs = zip(profile.specs(), profile.node_types(), strict=True)
    by_priority = config.node_priority and policy is Policy.OURS
    nodes = [
        SimNode(index, spec, kind, window, touched, priority_prefill=by_priority)
        for index, (spec, kind) in enumerate(pairs)
    ]
    kinds = {Tier.CENTER: profile.center, Tier.EDGE: profile.edge}
    jobs = []
    for request in trace:
        wanted = route(profile_of(request), config.routing).tier
        needed = estimate_kv_bytes(
            request.prompt_tokens, request.max_tokens, kinds[wanted].kv_bytes_per_token
        )
        jobs.append(Job(request, wanted, needed))
    send = dispatcher(policy, nodes, config.reserve, config.queue_length)

    heap: list[tuple[float, int, int, int]] = []
    order = itertools.count()
    next_arrival = 0
    now = 0.0
    while True:
        arrival_at = arrivals[next_arrival] if next_arrival < len(jobs) else math.inf
        if heap and heap[0][0] <= arrival_at:
            now, _, index, version = heapq.heappop(heap)
            node = nodes[index]
            if version != node.version:
                continue
            if node.on_event(now):
                send.freed(node, now)
        elif next_arrival < len(jobs):
            now = arrival_at
            send.arrive(jobs[next_arrival], now)
            next_arrival += 1
        else:
            break
        for node in touched:
            if node.scheduled_version != node.version:
                node.scheduled_version = node.version
                at = node.next_event()
                if at is not None:
                    heapq.heappush(heap, (at, next(order), node.index, node.version))
        touched.clear()
    for node in nodes:
        node.finish_accounting(now)
    return Run(policy, load, rate, tuple(jobs), tuple(nodes), window, now, len(send.rejected))
