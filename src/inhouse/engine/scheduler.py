"""The continuous-batching scheduler: a pure, synchronous state machine.

It owns the waiting line and the set of running sequences, and decides each step
which waiting sequences join (are prefilled) and which running ones decode. It does
no I/O and reads no clock of its own; the engine loop around it runs the model.

    scheduler.add(seq)                      # admission: may raise QueueFullError
    plan = scheduler.schedule(now)          # which sequences prefill / decode this step
    scheduler.update(finished_ids)          # after the step: free finished sequences
    scheduler.cancel(seq_id)                # a client went away: freed at the next step

Admission bounds memory. The running batch keeps one left-padded KV cache, so it
holds (rows times the longest row) token slots; with each row's worst case (prompt plus
``max_tokens``) that product never exceeds ``max_tokens_in_flight``. At most
``max_running`` sequences run; the waiting line holds at most ``max_waiting``. Waiting sequences
join in priority order, then in arrival order; a sequence that does not fit blocks
those behind it, so large requests are not starved by small ones.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

from inhouse.errors import InvalidRequestError, RateLimitError
from inhouse.protocol.types import Priority


@dataclass(frozen=True, slots=True)
class SchedulerLimits:
    max_running: int = 32
    max_tokens_in_flight: int = 32 * 1024
    max_waiting: int = 256
    max_prefill_tokens_per_step: int = 2048
    """Prompt tokens prefilled per step, so running streams keep moving while others join."""


@dataclass(frozen=True, slots=True)
class SequenceSpec:
    seq_id: int
    prompt_tokens: int
    max_tokens: int
    priority: Priority = Priority.NORMAL

    @property
    def worst_case_tokens(self) -> int:
        return self.prompt_tokens + self.max_tokens


@dataclass(frozen=True, slots=True)
class StepPlan:
    prefill: tuple[int, ...] = ()
    decode: tuple[int, ...] = ()
    drop: tuple[int, ...] = ()
    """Running sequences whose client went away: release their rows before the step."""

    @property
    def empty(self) -> bool:
        return not (self.prefill or self.decode or self.drop)


class QueueFullError(RateLimitError):
    def __init__(self, waiting: int) -> None:
        super().__init__(
            f"the engine's waiting line is full ({waiting} requests); retry shortly",
            retry_after_seconds=1.0,
            code="engine_overloaded",
        )


@dataclass(order=True)
class _Waiting:
    priority: int
    arrival: int
    spec: SequenceSpec = field(compare=False)
    enqueued_at: float = field(compare=False)


class Scheduler:
    def __init__(self, limits: SchedulerLimits) -> None:
        self.limits = limits
        self._waiting: list[_Waiting] = []
        self._running: dict[int, SequenceSpec] = {}
        self._cancelled: set[int] = set()
        self._arrivals = itertools.count()

    # -- admission ----------------------------------------------------------------
    def add(self, spec: SequenceSpec, now: float) -> None:
        if spec.worst_case_tokens > self.limits.max_tokens_in_flight:
            raise InvalidRequestError(
                f"the request needs up to {spec.worst_case_tokens} tokens; this engine holds "
                f"at most {self.limits.max_tokens_in_flight} in flight: lower max_tokens",
                param="max_tokens",
            )
        free_running = max(0, self.limits.max_running - len(self._running))
        if len(self._waiting) >= self.limits.max_waiting + free_running:
            raise QueueFullError(len(self._waiting))
        heapq.heappush(self._waiting, _Waiting(spec.priority, next(self._arrivals), spec, now))

    def cancel(self, seq_id: int) -> bool:
        """Forget a waiting sequence now (True), or drop a running one at the next step."""
        if seq_id in self._running:
            self._cancelled.add(seq_id)
            return False
        for index, item in enumerate(self._waiting):
            if item.spec.seq_id == seq_id:
                self._waiting.pop(index)
                heapq.heapify(self._waiting)
                return True
        return False

    # -- one step -------------------------------------------------------------------
    def schedule(self, now: float) -> StepPlan:
        drop = tuple(sorted(self._cancelled))
        for seq_id in drop:
            self._release(seq_id)
        self._cancelled.clear()

        decode = tuple(self._running)
        prefill: list[int] = []
        prefill_budget = self.limits.max_prefill_tokens_per_step
        while self._waiting:
            head = self._waiting[0].spec
            fits = (
                len(self._running) < self.limits.max_running
                and self._slots_with(head) <= self.limits.max_tokens_in_flight
            )
            # The first newcomer of a step is always prefilled, however long its prompt.
            within_budget = not prefill or head.prompt_tokens <= prefill_budget
            if not (fits and within_budget):
                break
            heapq.heappop(self._waiting)
            self._running[head.seq_id] = head
            prefill_budget -= head.prompt_tokens
            prefill.append(head.seq_id)
        return StepPlan(prefill=tuple(prefill), decode=decode, drop=drop)

    def update(self, finished: list[int] | tuple[int, ...]) -> None:
        for seq_id in finished:
            self._release(seq_id)
            self._cancelled.discard(seq_id)

    def _release(self, seq_id: int) -> None:
        self._running.pop(seq_id, None)

    def _slots_with(self, newcomer: SequenceSpec) -> int:
        """Worst-case cache slots of the padded batch if ``newcomer`` joined it."""
        longest = max(
            (spec.worst_case_tokens for spec in self._running.values()),
            default=0,
        )
        return (len(self._running) + 1) * max(longest, newcomer.worst_case_tokens)

    # -- observation ------------------------------------------------------------------
    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def tokens_in_flight(self) -> int:
        """Worst-case tokens of the running sequences (prompt plus max_tokens each)."""
        return sum(spec.worst_case_tokens for spec in self._running.values())

    def oldest_wait(self, now: float) -> float:
        """Seconds the longest-waiting sequence has waited."""
        return max((now - item.enqueued_at for item in self._waiting), default=0.0)

    def has_work(self) -> bool:
        return bool(self._waiting or self._running or self._cancelled)
