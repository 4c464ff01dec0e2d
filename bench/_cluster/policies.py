"""How each policy of the comparison sends requests to nodes.

- ``ours``: the complexity router (``inhouse.fleet.router.route``) picks a tier, the
  scheduler (``inhouse.fleet.scheduler.schedule``) a node with a free slot for the
  request's priority; a retryable refusal waits in ``inhouse.fleet.dispatch_queue``,
  retried whenever a node frees capacity.
- ``round_robin``: every node that serves the model in turn, tiers and priorities ignored;
  a node queues what it cannot start yet (FIFO).
- ``least_loaded``: the node with the lowest (running + queued) / capacity, tiers and
  priorities ignored; node-side FIFO queues as above.
- ``all_center``: least-loaded over the center nodes only: the fleet before the edge
  existed, for the central compute saved.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Protocol

from _cluster.fleet import MODEL
from _cluster.node import Job, SimNode
from inhouse.errors import RateLimitError
from inhouse.fleet.dispatch_queue import DispatchQueue
from inhouse.fleet.scheduler import Placement, PriorityReserve, Refusal, schedule
from inhouse.protocol.types import Tier


class Policy(StrEnum):
    OURS = "ours"
    ROUND_ROBIN = "round_robin"
    LEAST_LOADED = "least_loaded"
    ALL_CENTER = "all_center"


class Dispatcher(Protocol):
    rejected: list[Job]

    def arrive(self, job: Job, now: float) -> None: ...

    def freed(self, node: SimNode, now: float) -> None:
        """``node`` finished something: capacity may be free."""
        ...


class Tiered:
    """Our policy: route, schedule, queue when the fleet is full for the priority."""

    def __init__(
        self, nodes: Sequence[SimNode], reserve: PriorityReserve, queue_length: int
    ) -> None:
        self._nodes = list(nodes)
        self._by_id = {node.spec.id: node for node in nodes}
        self._reserve = reserve
        self.queue: DispatchQueue[Job] = DispatchQueue(queue_length)
        self.rejected: list[Job] = []

    def arrive(self, job: Job, now: float) -> None:
        priority = job.request.priority
        # Nobody overtakes a waiter of the same or a higher priority.
        if any(self.queue.count(p) for p in type(priority) if p <= priority):
            self._wait(job, now)
            return
        result = self._try(job, now)
        if isinstance(result, Refusal):
            if result.retryable:
                self._wait(job, now)
            else:
                self._reject(job)

    def freed(self, node: SimNode, now: float) -> None:
        for waiter in self.queue.waiting():
            result = self._try(waiter.item, now)
            if isinstance(result, Placement):
                self.queue.remove(waiter.ticket)
            elif result.retryable:
                break  # the ones behind it (same or lower priority) find them full too
            else:
                self.queue.remove(waiter.ticket)
                self._reject(waiter.item)

    def _try(self, job: Job, now: float) -> Placement | Refusal:
        result = schedule(
            [node.snapshot() for node in self._nodes],
            model=MODEL,
            tier=job.wanted,
            priority=job.request.priority,
            tenant_id=None,
            needed_bytes=job.needed_bytes,
            reserve=self._reserve,
        )
        if isinstance(result, Placement):
            job.fell_back = result.fell_back
            self._by_id[result.node_id].admit(job, now)
        return result

    def _wait(self, job: Job, now: float) -> None:
        try:
            self.queue.push(job, job.request.priority, now=now)
            job.queued = True
        except RateLimitError:
            self._reject(job)

    def _reject(self, job: Job) -> None:
        job.rejected = True
        self.rejected.append(job)


class RoundRobin:
    def __init__(self, nodes: Sequence[SimNode]) -> None:
        self._nodes = list(nodes)
        self._next = 0
        self.rejected: list[Job] = []

    def arrive(self, job: Job, now: float) -> None:
        node = self._nodes[self._next % len(self._nodes)]
        self._next += 1
        node.accept(job, now)

    def freed(self, node: SimNode, now: float) -> None:
        node.pull_local(now)


class LeastLoaded:
    def __init__(self, nodes: Sequence[SimNode]) -> None:
        self._nodes = list(nodes)
        self.rejected: list[Job] = []

    def arrive(self, job: Job, now: float) -> None:
        node = min(self._nodes, key=lambda n: (n.occupancy() / n.kind.capacity, n.spec.id))
        node.accept(job, now)

    def freed(self, node: SimNode, now: float) -> None:
        node.pull_local(now)


def dispatcher(
    policy: Policy, nodes: Sequence[SimNode], reserve: PriorityReserve, queue_length: int
) -> Dispatcher:
    if policy is Policy.OURS:
        return Tiered(nodes, reserve, queue_length)
    if policy is Policy.ROUND_ROBIN:
        return RoundRobin(nodes)
    if policy is Policy.LEAST_LOADED:
        return LeastLoaded(nodes)
    return LeastLoaded([node for node in nodes if node.spec.tier is Tier.CENTER])
