"""What a run measured, summarised; the tables and the check against the article."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from _cluster.fleet import GATEWAY_OVERHEAD_S
from _cluster.node import Job, SimNode
from _cluster.policies import Policy
from _cluster.sim import Run
from inhouse.protocol.types import Priority, Tier

ARTICLE_LATENCY_CUT = 0.67
ARTICLE_COMPUTE_CUT = 0.35
ARTICLE_UTILISATION = 0.85
ARTICLE_CRITICAL_S = 0.5


@dataclass(frozen=True, slots=True)
class Stat:
    mean: float
    p50: float
    p99: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Stat:
        array = np.fromiter(values, dtype=float)
        if not array.size:
            return cls(float("nan"), float("nan"), float("nan"))
        p50, p99 = np.percentile(array, [50, 99])
        return cls(float(array.mean()), float(p50), float(p99))


@dataclass(frozen=True, slots=True)
class ByPriority:
    high: Stat
    normal: Stat
    low: Stat
    all: Stat

    def of(self, priority: Priority) -> Stat:
        return (self.high, self.normal, self.low)[int(priority)]


@dataclass(frozen=True, slots=True)
class Summary:
    policy: Policy
    load: float
    rate: float
    measured: int
    """Requests in the statistics (those that arrived after the warm-up)."""
    completed: int
    rejected: int
    e2e: ByPriority
    """Seconds from arrival at the gateway to the last token back at the client."""
    ttft: ByPriority
    """Seconds from arrival to the first token back at the client."""
    wait: ByPriority
    """Seconds queued before a batch slot (dispatch queue or node queue)."""
    ttft_excess: ByPriority
    """Time to first token less what it takes on an idle node (network and the prompt's
    own prefill): the part that scheduling and load decide."""
    high_within_budget: float
    """Share of high-priority requests whose first token came within 0.5 s."""
    util_center: float
    """Center node time in the window spent at full-batch efficiency: a node running a
    full batch counts fully, one decoding 8 sequences of 64 about an eighth."""
    util_edge: float
    util_fleet: float
    slots_center: float
    """Occupied batch slots over available slot time (a prompt being prefilled holds a
    slot but uses the whole node, so this reads lower than the work done)."""
    slots_edge: float
    busy_center: float
    """Share of node time with at least one sequence."""
    busy_edge: float
    demand_center: float
    """Work sent to the center over what it serves at full batch (above 1: overloaded)."""
    demand_edge: float
    edge_share: float
    complex_at_edge: float
    """Share of the requests the router sends to the center that an edge node served."""
    fell_back: float
    center_gpu_s: float
    """GPU-seconds of center work, each request costed at full-batch efficiency."""
    center_busy_gpu_s: float
    """GPU-seconds during which center nodes had at least one sequence."""


def _by_priority(jobs: Sequence[Job], value: Callable[[Job], float]) -> ByPriority:
    per = [Stat.of(value(job) for job in jobs if job.request.priority == p) for p in Priority]
    return ByPriority(per[0], per[1], per[2], Stat.of(value(job) for job in jobs))


def _network(job: Job) -> float:
    assert job.node is not None
    return job.node.kind.rtt_s + GATEWAY_OVERHEAD_S


def _ttft(job: Job, rate: float) -> float:
    return job.first_token - job.request.at / rate + _network(job)


def _floor(job: Job) -> float:
    assert job.node is not None
    return _network(job) + job.node.kind.idle_prefill_s(job.request.prompt_tokens)


def _tier(job: Job) -> Tier:
    assert job.node is not None
    return job.node.spec.tier


def _work(job: Job) -> float:
    """Node-seconds of the job at full-batch efficiency on the node that served it."""
    assert job.node is not None
    return job.node.kind.full_batch_seconds(job.request.prompt_tokens, job.request.output_tokens)


def summarize(run: Run) -> Summary:
    rate = run.rate
    served = [job for job in run.jobs if not job.rejected]
    measured = [job for job in served if job.request.at / rate >= run.window.start]
    span = run.window.end - run.window.start
    duration = run.jobs[-1].request.at / rate

    def nodes(tier: Tier | None) -> list[SimNode]:
        return [node for node in run.nodes if tier is None or node.spec.tier is tier]

    def slots(tier: Tier) -> float:
        available = span * sum(node.kind.capacity for node in nodes(tier))
        used = sum(node.slot_seconds for node in nodes(tier))
        return used / available if available else 0.0

    def utilisation(tier: Tier | None) -> float:
        count = len(nodes(tier))
        seconds = sum(node.work_seconds for node in nodes(tier))
        return seconds / (span * count) if count else 0.0

    def busy(tier: Tier) -> float:
        count = len(nodes(tier))
        return sum(node.busy_seconds for node in nodes(tier)) / (span * count) if count else 0.0

    def demand(tier: Tier) -> float:
        count = len(nodes(tier))
        seconds = sum(_work(job) for job in served if _tier(job) is tier)
        return seconds / (duration * count) if count else 0.0

    edge_jobs = sum(1 for job in served if _tier(job) is Tier.EDGE)
    complex_jobs = [job for job in served if job.wanted is Tier.CENTER]
    complex_at_edge = sum(1 for job in complex_jobs if _tier(job) is Tier.EDGE)
    center = nodes(Tier.CENTER)
    highs = [_ttft(job, rate) for job in measured if job.request.priority == Priority.HIGH]
    within = sum(1 for ttft in highs if ttft < ARTICLE_CRITICAL_S)
    within_budget = within / len(highs) if highs else float("nan")
    return Summary(
        policy=run.policy,
        load=run.load,
        rate=rate,
        measured=len(measured),
        completed=sum(job.completions for job in run.jobs),
        rejected=run.rejected,
        e2e=_by_priority(measured, lambda j: j.finished - j.request.at / rate + _network(j)),
        ttft=_by_priority(measured, lambda j: _ttft(j, rate)),
        wait=_by_priority(measured, lambda j: j.admitted - j.request.at / rate),
        ttft_excess=_by_priority(measured, lambda j: _ttft(j, rate) - _floor(j)),
        high_within_budget=within_budget,
        util_center=utilisation(Tier.CENTER),
        util_edge=utilisation(Tier.EDGE),
        util_fleet=utilisation(None),
        slots_center=slots(Tier.CENTER),
        slots_edge=slots(Tier.EDGE),
        busy_center=busy(Tier.CENTER),
        busy_edge=busy(Tier.EDGE),
        demand_center=demand(Tier.CENTER),
        demand_edge=demand(Tier.EDGE),
        edge_share=edge_jobs / len(served) if served else 0.0,
        complex_at_edge=complex_at_edge / len(complex_jobs) if complex_jobs else 0.0,
        fell_back=sum(1 for job in served if job.fell_back) / len(served) if served else 0.0,
        center_gpu_s=sum(
            _work(job) * job.node.kind.gpus
            for job in served
            if job.node is not None and job.node.spec.tier is Tier.CENTER
        ),
        center_busy_gpu_s=sum(node.busy_total * node.kind.gpus for node in center),
    )
