"""Requests waiting for capacity anywhere in the fleet, in the order they will be served.

Pure and synchronous: the caller passes the time (``now``, monotonic seconds) to every
call that needs it, so waits and timeouts are deterministic under test. Items are opaque
tokens (the async gateway puts a future or a request id there).

Order: high priority before normal before low; first come, first served within a class.
The queue is bounded; ``push`` on a full queue raises ``RateLimitError`` (429) with the
caller's ``retry_after_seconds``. A waiter that gives up (client gone, gateway timeout) is
taken out with ``remove``; waiters past their own deadline come out of ``expire``.

The gateway's loop around it: on a retryable refusal, ``push``; whenever capacity frees,
walk ``waiting()`` in order, schedule each, ``remove`` the placed ones, and stop at the
first that is refused as retryable (the ones behind it have the same or a lower priority,
so they find the same nodes full, unless they need less memory); wake at
``next_deadline()`` to ``expire`` the ones that waited too long.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from inhouse.errors import RateLimitError
from inhouse.protocol.types import Priority

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class QueueTicket:
    """A place in the queue; ``remove`` takes it back."""

    seq: int
    priority: Priority
    enqueued_at: float
    deadline: float | None
    """Monotonic seconds after which ``expire`` takes the waiter out; None: never."""


@dataclass(frozen=True, slots=True)
class Waiter(Generic[T]):
    item: T
    ticket: QueueTicket

    def waited(self, now: float) -> float:
        """Seconds since it was queued."""
        return now - self.ticket.enqueued_at


class _Lane(Generic[T]):
    """One priority class: waiters in arrival order; removed ones are skipped, and
    compacted away on ``push`` once they outnumber the live ones."""

    __slots__ = ("head", "items", "live")

    def __init__(self) -> None:
        self.items: list[Waiter[T]] = []
        self.head = 0
        self.live = 0


class DispatchQueue(Generic[T]):
    """A bounded priority queue of waiting requests; see the module docstring."""

    def __init__(self, max_length: int, *, retry_after_seconds: float = 1.0) -> None:
        if max_length < 1:
            raise ValueError("max_length must be at least 1")
        self._max_length = max_length
        self._retry_after = retry_after_seconds
        self._counter = itertools.count()
        self._lanes: dict[Priority, _Lane[T]] = {p: _Lane() for p in sorted(Priority)}
        self._live: dict[int, Waiter[T]] = {}
        self._deadlines: list[tuple[float, int]] = []

    def __len__(self) -> int:
        return len(self._live)

    @property
    def max_length(self) -> int:
        return self._max_length

    def count(self, priority: Priority) -> int:
        """Waiters of one priority class."""
        return self._lanes[priority].live

    def push(
        self, item: T, priority: Priority, *, now: float, timeout: float | None = None
    ) -> QueueTicket:
        """Queue ``item``; raise ``RateLimitError`` (code ``dispatch_queue_full``) when full.

        ``timeout``: seconds it may wait before ``expire`` takes it out; None: no limit.
        """
        if len(self._live) >= self._max_length:
            raise RateLimitError(
                f"all nodes are busy and {self._max_length} requests are already waiting",
                retry_after_seconds=self._retry_after,
                code="dispatch_queue_full",
            )
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must not be negative")
        deadline = None if timeout is None else now + timeout
        ticket = QueueTicket(next(self._counter), Priority(priority), now, deadline)
        waiter = Waiter(item, ticket)
        lane = self._lanes[ticket.priority]
        if len(lane.items) - lane.head > 2 * lane.live + 16:
            lane.items = [w for w in lane.items[lane.head :] if w.ticket.seq in self._live]
            lane.head = 0
        lane.items.append(waiter)
        lane.live += 1
        self._live[ticket.seq] = waiter
        if deadline is not None:
            heapq.heappush(self._deadlines, (deadline, ticket.seq))
        return ticket

    def waiting(self) -> Iterator[Waiter[T]]:
        """The waiters in service order, lazily. Removing (``remove``, ``pop``,
        ``expire``) while iterating is fine; pushing is not."""
        for lane in self._lanes.values():
            index = lane.head
            while index < len(lane.items):
                waiter = lane.items[index]
                index += 1
                if waiter.ticket.seq in self._live:
                    yield waiter

    def peek(self) -> Waiter[T] | None:
        """The waiter to serve next, or None."""
        for lane in self._lanes.values():
            if lane.live:
                return lane.items[lane.head]
        return None

    def pop(self) -> Waiter[T] | None:
        """Take out the waiter to serve next, or None when nobody waits."""
        waiter = self.peek()
        if waiter is not None:
            self.remove(waiter.ticket)
        return waiter

    def remove(self, ticket: QueueTicket) -> bool:
        """Take out a waiter (placed, or given up); False when it was no longer there."""
        if self._live.pop(ticket.seq, None) is None:
            return False
        lane = self._lanes[ticket.priority]
        lane.live -= 1
        while lane.head < len(lane.items) and lane.items[lane.head].ticket.seq not in self._live:
            lane.head += 1
        return True

    def expire(self, now: float) -> list[Waiter[T]]:
        """Take out and return the waiters whose deadline is at or before ``now``."""
        expired: list[Waiter[T]] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, seq = heapq.heappop(self._deadlines)
            waiter = self._live.get(seq)
            if waiter is not None:
                self.remove(waiter.ticket)
                expired.append(waiter)
        return expired

    def next_deadline(self) -> float | None:
        """The earliest deadline of a waiter still queued, or None."""
        while self._deadlines and self._deadlines[0][1] not in self._live:
            heapq.heappop(self._deadlines)
        return self._deadlines[0][0] if self._deadlines else None
