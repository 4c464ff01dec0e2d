"""Fair-share allocation of cluster resources to deployments and training jobs.

A pure function of the cluster's capacity, the tenants' limits, the work already
running and the queue: no I/O, no clock. The rules:

* a tenant never holds more than its own limit, nor more than ``cap_fraction`` (30% by
  default) of the cluster, in each resource: CPU, memory, GPUs;
* within those bounds, free capacity goes by dominant-resource fairness (DRF): the next
  item offered is the head of the queue of the tenant with the lowest weighted dominant
  share (its largest fraction of any one resource, divided by its weight), ties by
  priority, then submission order; a tenant's own items go by priority, then submission;
* an item that does not fit waits, with the first rule it breaks as its reason, and
  smaller items behind it may still be placed.

Running work stays where it is and counts against its tenant. Usage only grows during a
call, so an item that does not fit when offered would not fit later either: each item is
offered once, and every waiting item still breaks its stated rule in the final state.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction

from inhouse.errors import InvalidRequestError
from inhouse.tenancy.quotas import Quota

DEFAULT_CAP_FRACTION = 0.30
_GIB = 1 << 30
_CPU_TOLERANCE = 1e-9  # relative: sums of fractional core counts drift in the last bits


class Resource(StrEnum):
    CPU = "cpu"
    MEMORY = "memory"
    GPUS = "gpus"


class WorkKind(StrEnum):
    DEPLOYMENT = "deployment"
    TRAINING = "training"


class Blocker(StrEnum):
    """The rule a waiting item would break; checked in this order."""

    TENANT_LIMIT = "tenant_limit"
    CLUSTER_CAP = "cluster_cap"
    FREE_CAPACITY = "free_capacity"


@dataclass(frozen=True, slots=True)
class Resources:
    """An amount of each resource: ``cpu`` in cores, ``memory`` in bytes, whole GPUs."""

    cpu: float = 0.0
    memory: int = 0
    gpus: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu + other.cpu, self.memory + other.memory, self.gpus + other.gpus)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpu - other.cpu, self.memory - other.memory, self.gpus - other.gpus)

    def amount(self, resource: Resource) -> float:
        if resource is Resource.CPU:
            return self.cpu
        if resource is Resource.MEMORY:
            return self.memory
        return self.gpus

    def fits_within(self, bound: Resources) -> bool:
        return all(_within(r, self.amount(r), bound.amount(r)) for r in Resource)


@dataclass(frozen=True, slots=True)
class TenantLimits:
    """A tenant's own ceiling per resource (``None``: only the cluster cap) and its weight."""

    cpu: float | None = None
    memory: int | None = None
    gpus: int | None = None
    weight: float = 1.0

    def limit(self, resource: Resource) -> float | None:
        if resource is Resource.CPU:
            return self.cpu
        if resource is Resource.MEMORY:
            return self.memory
        return self.gpus

    @classmethod
    def from_quota(cls, quota: Quota, weight: float = 1.0) -> TenantLimits:
        """A tenant's limits as ``inhouse quotas set --cpu … --memory …`` stored them."""
        return cls(cpu=quota.cpu_limit, memory=quota.memory_limit, weight=weight)


@dataclass(frozen=True, slots=True)
class WorkItem:
    """A deployment or training job; ``priority`` lower first, then ``sequence`` (submission)."""

    id: str
    tenant_id: str
    kind: WorkKind
    demand: Resources
    priority: int = 0
    sequence: int = 0


@dataclass(frozen=True, slots=True)
class Waiting:
    """An item left in the queue: the first rule it broke, in which resource, and why."""

    item: WorkItem
    blocker: Blocker
    resource: Resource
    reason: str


@dataclass(frozen=True, slots=True)
class Allocation:
    """``placed`` in the order placed, ``waiting`` in the order turned down; ``usage`` is
    running plus placed work per tenant, ``free`` what is left of the cluster."""

    placed: tuple[WorkItem, ...]
    waiting: tuple[Waiting, ...]
    usage: Mapping[str, Resources]
    free: Resources


def allocate(
    capacity: Resources,
    tenants: Mapping[str, TenantLimits],
    running: Sequence[WorkItem],
    queue: Sequence[WorkItem],
    *,
    cap_fraction: float = DEFAULT_CAP_FRACTION,
) -> Allocation:
    """Place what fits of ``queue`` on a cluster of ``capacity`` where ``running`` already runs.

    Every tenant of ``running`` and ``queue`` must be a key of ``tenants``.
    Raises ``InvalidRequestError`` for a cap outside (0, 1], a negative or non-finite
    amount, a weight that is not positive, an unknown tenant or a repeated item id.
    """
    _validate(capacity, tenants, running, queue, cap_fraction)
    cap = _cluster_cap(capacity, cap_fraction)
    usage = {tenant_id: Resources() for tenant_id in tenants}
    free = capacity
    for item in running:
        usage[item.tenant_id] += item.demand
        free -= item.demand
    pending: dict[str, deque[WorkItem]] = {}
    for item in sorted(queue, key=lambda i: (i.priority, i.sequence, i.id)):
        pending.setdefault(item.tenant_id, deque()).append(item)
    heap = [_turn(t, usage[t], tenants[t], capacity, items[0]) for t, items in pending.items()]
    heapq.heapify(heap)
    placed: list[WorkItem] = []
    waiting: list[Waiting] = []
    while heap:
        tenant_id = heapq.heappop(heap)[-1]
        items = pending[tenant_id]
        item = items.popleft()
        blocked = _blocker(item, usage[tenant_id], tenants[tenant_id], cap, free, cap_fraction)
        if blocked is None:
            placed.append(item)
            usage[tenant_id] += item.demand
            free -= item.demand
        else:
            waiting.append(blocked)
        if items:
            limits = tenants[tenant_id]
            heapq.heappush(heap, _turn(tenant_id, usage[tenant_id], limits, capacity, items[0]))
    return Allocation(tuple(placed), tuple(waiting), usage, free)


def dominant_share(usage: Resources, capacity: Resources) -> float:
    """The largest fraction of any one resource of the cluster that ``usage`` holds."""
    shares = (usage.amount(r) / capacity.amount(r) for r in Resource if capacity.amount(r) > 0)
    return max(shares, default=0.0)


def _turn(
    tenant_id: str, usage: Resources, limits: TenantLimits, capacity: Resources, head: WorkItem
) -> tuple[float, int, int, str, str]:
    share = dominant_share(usage, capacity) / limits.weight
    return (share, head.priority, head.sequence, head.id, tenant_id)


def _blocker(
    item: WorkItem,
    usage: Resources,
    limits: TenantLimits,
    cap: Resources,
    free: Resources,
    cap_fraction: float,
) -> Waiting | None:
    tenant, after = item.tenant_id, usage + item.demand
    for r in Resource:
        limit = limits.limit(r)
        if limit is not None and not _within(r, after.amount(r), limit):
            reason = (
                f"tenant {tenant!r} would hold {_show(r, after.amount(r))}, "
                f"over its {r} limit of {_show(r, limit)}"
            )
            return Waiting(item, Blocker.TENANT_LIMIT, r, reason)
    for r in Resource:
        if not _within(r, after.amount(r), cap.amount(r)):
            reason = (
                f"tenant {tenant!r} would hold {_show(r, after.amount(r))}, over the "
                f"{cap_fraction * 100:g}% cluster cap of {_show(r, cap.amount(r))}"
            )
            return Waiting(item, Blocker.CLUSTER_CAP, r, reason)
    for r in Resource:
        if not _within(r, item.demand.amount(r), free.amount(r)):
            reason = (
                f"not enough free capacity: needs {_show(r, item.demand.amount(r))}, "
                f"{_show(r, free.amount(r))} free"
            )
            return Waiting(item, Blocker.FREE_CAPACITY, r, reason)
    return None


def _cluster_cap(capacity: Resources, cap_fraction: float) -> Resources:
    # The fraction as written (0.3 is 3/10, not the binary float just below it), so that
    # 30% of 10 GPUs is 3 whole GPUs, not 2.
    exact = Fraction(repr(cap_fraction))
    return Resources(
        cpu=capacity.cpu * cap_fraction,
        memory=math.floor(exact * capacity.memory),
        gpus=math.floor(exact * capacity.gpus),
    )


def _within(resource: Resource, amount: float, bound: float) -> bool:
    if resource is Resource.CPU:
        return amount <= bound + _CPU_TOLERANCE * max(1.0, abs(bound))
    return amount <= bound


def _show(resource: Resource, amount: float) -> str:
    if resource is Resource.MEMORY:
        return f"{amount / _GIB:g} GiB memory"
    unit = "core" if resource is Resource.CPU else "GPU"
    return f"{amount:g} {unit}{'' if amount == 1 else 's'}"


def _validate(
    capacity: Resources,
    tenants: Mapping[str, TenantLimits],
    running: Sequence[WorkItem],
    queue: Sequence[WorkItem],
    cap_fraction: float,
) -> None:
    if not 0.0 < cap_fraction <= 1.0:
        raise InvalidRequestError(
            f"cap_fraction must be in (0, 1], got {cap_fraction!r}", param="cap_fraction"
        )
    _check_amounts("cluster capacity", capacity, "capacity")
    for tenant_id, limits in tenants.items():
        if not 0.0 < limits.weight < math.inf:
            raise InvalidRequestError(
                f"tenant {tenant_id!r}: weight must be a positive number, got {limits.weight!r}",
                param="tenants",
            )
        for r in Resource:
            limit = limits.limit(r)
            if limit is not None:
                _check_amount(f"tenant {tenant_id!r} limit", r, limit, "tenants")
    seen: set[str] = set()
    for param, items in (("running", running), ("queue", queue)):
        for item in items:
            if item.id in seen:
                raise InvalidRequestError(f"work item id {item.id!r} appears twice", param=param)
            seen.add(item.id)
            if item.tenant_id not in tenants:
                raise InvalidRequestError(
                    f"work item {item.id!r} belongs to unknown tenant {item.tenant_id!r}",
                    param=param,
                )
            _check_amounts(f"work item {item.id!r} demand", item.demand, param)


def _check_amounts(what: str, amounts: Resources, param: str) -> None:
    for r in Resource:
        _check_amount(what, r, amounts.amount(r), param)


def _check_amount(what: str, resource: Resource, value: float, param: str) -> None:
    if not 0 <= value < math.inf:  # also refuses NaN
        raise InvalidRequestError(
            f"{what}: {resource} must be a finite number >= 0, got {value!r}", param=param
        )
