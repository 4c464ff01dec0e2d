"""Per model, the requests waiting for a node with room: in priority order, and fairly
between tenants.

A request tries at once; refused as full, it waits in the model's queue and tries again
whenever a node of that model frees a slot or every quarter second. Waiting requests
never block one that another node (its tenant's own, one with more memory) can take now.

Fair share (``engine.fair_slots``, the same rule as the local engine's): while another
tenant's requests for the model wait, no tenant holds more than ``max_share`` of the
model's node slots (the capacity of its available nodes); a tenant alone may use them
all. A freed slot wakes the waiters in priority order, then the tenant holding the
fewest slots per weight first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from inhouse.config import Settings
from inhouse.engine.base import Share
from inhouse.engine.fair_slots import share_cap
from inhouse.errors import EngineUnavailableError, RateLimitError
from inhouse.fleet.dispatch_queue import DispatchQueue, QueueTicket, Waiter
from inhouse.fleet.health import FleetMonitor
from inhouse.fleet.scheduler import Placement, schedule
from inhouse.protocol.types import Priority, Tier

RECHECK_SECONDS = 0.25
"""A queued request looks again this often even unwoken: loads change with each poll."""


@dataclass(frozen=True, slots=True)
class _Waiting:
    wake: asyncio.Event
    share: Share


class Dispatcher:
    def __init__(self, monitor: FleetMonitor, settings: Settings, clock: Callable[[], float]):
        self._monitor = monitor
        self._settings = settings.fleet
        self._max_share = settings.tenancy.max_share
        self._clock = clock
        self._queues: dict[str, DispatchQueue[_Waiting]] = {}
        self._held: dict[str, Counter[str]] = {}
        """Per model, the node slots each tenant (share group) holds."""
        self._waiters: dict[str, Counter[str]] = {}
        """Per model, the requests each tenant has waiting."""

    async def place(
        self,
        *,
        model: str,
        tier: Tier,
        priority: Priority,
        tenant_id: str | None,
        needed_bytes: int,
        exclude: frozenset[str],
        share: Share | None = None,
    ) -> Placement:
        """A node for the request, its ``begin`` already counted; waits while all are full
        or the tenant is at its share. ``finished`` ends what this began."""
        share = share or Share()
        queue = self._queues.setdefault(model, DispatchQueue(self._settings.max_queued_requests))
        deadline = self._clock() + self._settings.queue_timeout_seconds
        ticket: QueueTicket | None = None
        waiting = _Waiting(asyncio.Event(), share)
        waiters = self._waiters.setdefault(model, Counter())
        try:
            while True:
                if not self._over_share(model, share.group):
                    decision = schedule(
                        self._monitor.snapshots(),
                        model=model,
                        tier=tier,
                        priority=priority,
                        tenant_id=tenant_id,
                        needed_bytes=needed_bytes,
                        exclude=exclude,
                    )
                    if isinstance(decision, Placement):
                        self._monitor.begin(decision.node_id)
                        self._held.setdefault(model, Counter())[share.group] += 1
                        return decision
                    if not decision.retryable:
                        raise EngineUnavailableError(
                            f"no node can serve the model '{model}' now ({decision.reason})"
                        )
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise RateLimitError(
                        f"every node serving '{model}' stayed busy for "
                        f"{self._settings.queue_timeout_seconds:g} s",
                        retry_after_seconds=self._settings.queue_timeout_seconds,
                        code="fleet_busy",
                    )
                if ticket is None:
                    ticket = queue.push(waiting, priority, now=self._clock())
                    waiters[share.group] += 1
                waiting.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiting.wake.wait(), min(remaining, RECHECK_SECONDS))
        finally:
            if ticket is not None:
                queue.remove(ticket)
                _decrement(waiters, share.group)

    def finished(self, model: str, share: Share | None = None) -> None:
        """A request placed for ``model`` ended: its tenant holds one slot less."""
        held = self._held.get(model)
        if held is not None:
            _decrement(held, (share or Share()).group)

    def released(self, models: Iterable[str]) -> None:
        """A node serving ``models`` has a free slot: their waiters try again, in priority
        order, then the tenant with the fewest slots per weight first."""
        for model in models:
            queue = self._queues.get(model)
            if queue is None:
                continue
            held = self._held.get(model, Counter())

            def turn(waiter: Waiter[_Waiting], held: Counter[str] = held) -> tuple[int, float, int]:
                share = waiter.item.share
                return (waiter.ticket.priority, held[share.group] / share.weight, waiter.ticket.seq)

            for waiter in sorted(queue.waiting(), key=turn):
                waiter.item.wake.set()

    def held(self, model: str) -> dict[str, int]:
        """The node slots each tenant holds for ``model`` now."""
        return dict(self._held.get(model, {}))

    def _over_share(self, model: str, group: str) -> bool:
        """Whether the tenant holds its share of the model's slots while another waits."""
        waiters = self._waiters.get(model, Counter())
        if self._max_share >= 1.0 or not any(n for g, n in waiters.items() if g != group):
            return False
        slots = sum(
            s.spec.capacity
            for s in self._monitor.snapshots()
            if s.available and model in s.spec.models
        )
        return self._held.get(model, Counter())[group] >= share_cap(slots, self._max_share)


def _decrement(counts: Counter[str], key: str) -> None:
    if counts[key] > 1:
        counts[key] -= 1
    else:
        del counts[key]
