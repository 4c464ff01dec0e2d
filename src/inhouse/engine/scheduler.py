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
join in priority order; within a class, fairly between groups (``engine.fair_slots``: no
group above ``max_share`` of the slots while another waits, the group with the fewest
slots per weight first), then in arrival order. A sequence that does not fit blocks
those behind it, so large requests are not starved by small ones.

A group that took more than its share while it was alone gives the excess back as soon
as another group waits: its newest sequences are preempted (their rows are released,
and they rejoin first among their group's waiting ones, to be prefilled again with what
they have generated so far), as vLLM preempts by recomputation.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

from inhouse.engine.fair_slots import Head, next_head, share_cap, targets
from inhouse.errors import InvalidRequestError, RateLimitError
from inhouse.protocol.types import Priority


@dataclass(frozen=True, slots=True)
class SchedulerLimits:
    max_running: int = 32
    max_tokens_in_flight: int = 32 * 1024
    max_waiting: int = 256
    max_prefill_tokens_per_step: int = 2048
    """Prompt tokens prefilled per step, so running streams keep moving while others join."""
    max_share: float = 1.0
    """The most of ``max_running`` one group holds while another group's sequences wait."""


@dataclass(frozen=True, slots=True)
class SequenceSpec:
    seq_id: int
    prompt_tokens: int
    max_tokens: int
    priority: Priority = Priority.NORMAL
    group: str = ""
    """Whose share of the slots it counts against (the gateway names the tenant)."""
    weight: float = 1.0

    @property
    def worst_case_tokens(self) -> int:
        return self.prompt_tokens + self.max_tokens


@dataclass(frozen=True, slots=True)
class StepPlan:
    prefill: tuple[int, ...] = ()
    decode: tuple[int, ...] = ()
    drop: tuple[int, ...] = ()
    """Running sequences whose client went away: release their rows before the step."""
    preempt: tuple[int, ...] = ()
    """Running sequences that give their slot back for fairness: release their rows and
    keep them; they are prefilled again (prompt and output so far) when they rejoin."""

    @property
    def empty(self) -> bool:
        return not (self.prefill or self.decode or self.drop or self.preempt)


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
        self._waiting: dict[str, list[_Waiting]] = {}
        """Per group, its waiting sequences as a heap (priority, arrival)."""
        self._waiting_count = 0
        self._running: dict[int, SequenceSpec] = {}
        self._held: dict[str, int] = {}
        self._cap = share_cap(limits.max_running, limits.max_share)
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
        if self._waiting_count >= self.limits.max_waiting + free_running:
            raise QueueFullError(self._waiting_count)
        item = _Waiting(spec.priority, next(self._arrivals), spec, now)
        heapq.heappush(self._waiting.setdefault(spec.group, []), item)
        self._waiting_count += 1

    def cancel(self, seq_id: int) -> bool:
        """Forget a waiting sequence now (True), or drop a running one at the next step."""
        if seq_id in self._running:
            self._cancelled.add(seq_id)
            return False
        for group, line in self._waiting.items():
            for index, item in enumerate(line):
                if item.spec.seq_id == seq_id:
                    line.pop(index)
                    heapq.heapify(line)
                    self._forget_empty(group)
                    self._waiting_count -= 1
                    return True
        return False

    # -- one step -------------------------------------------------------------------
    def schedule(self, now: float) -> StepPlan:
        drop = tuple(sorted(self._cancelled))
        for seq_id in drop:
            self._release(seq_id)
        self._cancelled.clear()

        preempt = self._preempt_excess(now)
        decode = tuple(self._running)
        prefill: list[int] = []
        prefill_budget = self.limits.max_prefill_tokens_per_step
        while self._waiting:
            head = next_head(self._heads(), self._held, self._cap)
            if head is None:
                break  # every waiting group is at its share while another waits
            spec = self._waiting[head.group][0].spec
            fits = (
                len(self._running) < self.limits.max_running
                and self._slots_with(spec) <= self.limits.max_tokens_in_flight
            )
            # The first newcomer of a step is always prefilled, however long its prompt.
            within_budget = not prefill or spec.prompt_tokens <= prefill_budget
            if not (fits and within_budget):
                break
            heapq.heappop(self._waiting[head.group])
            self._forget_empty(head.group)
            self._waiting_count -= 1
            self._running[spec.seq_id] = spec
            self._held[spec.group] = self._held.get(spec.group, 0) + 1
            prefill_budget -= spec.prompt_tokens
            prefill.append(spec.seq_id)
        return StepPlan(prefill=tuple(prefill), decode=decode, drop=drop, preempt=preempt)

    def _preempt_excess(self, now: float) -> tuple[int, ...]:
        """The newest sequences of groups holding more than their fair target
        (``fair_slots.targets``): they give their slots back and wait again, first of
        their group."""
        if not self._waiting:
            return ()
        demand = dict(self._held)
        for group, line in self._waiting.items():
            demand[group] = demand.get(group, 0) + len(line)
        target = targets(demand, self.limits.max_running, self._cap)
        preempted: list[int] = []
        for seq_id in reversed(list(self._running)):
            spec = self._running[seq_id]
            if self._held[spec.group] <= target[spec.group]:
                continue
            self._release(seq_id)
            first = min((item.arrival for item in self._waiting.get(spec.group, ())), default=0)
            item = _Waiting(spec.priority, first - 1, spec, now)
            heapq.heappush(self._waiting.setdefault(spec.group, []), item)
            self._waiting_count += 1
            preempted.append(seq_id)
        return tuple(preempted)

    def update(self, finished: list[int] | tuple[int, ...]) -> None:
        for seq_id in finished:
            self._release(seq_id)
            self._cancelled.discard(seq_id)

    def _heads(self) -> list[Head]:
        heads = []
        for group, line in self._waiting.items():
            first = line[0]
            heads.append(Head(group, first.priority, first.arrival, first.spec.weight))
        return heads

    def _forget_empty(self, group: str) -> None:
        if not self._waiting[group]:
            del self._waiting[group]

    def _release(self, seq_id: int) -> None:
        spec = self._running.pop(seq_id, None)
        if spec is not None:
            held = self._held[spec.group] - 1
            if held:
                self._held[spec.group] = held
            else:
                del self._held[spec.group]

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
        return self._waiting_count

    @property
    def running(self) -> int:
        return len(self._running)

    def running_by_group(self) -> dict[str, int]:
        """Running sequences per group."""
        return dict(self._held)

    def waiting_by_group(self) -> dict[str, int]:
        """Waiting sequences per group."""
        return {group: len(line) for group, line in self._waiting.items()}

    @property
    def tokens_in_flight(self) -> int:
        """Worst-case tokens of the running sequences (prompt plus max_tokens each)."""
        return sum(spec.worst_case_tokens for spec in self._running.values())

    def oldest_wait(self, now: float) -> float:
        """Seconds the longest-waiting sequence has waited."""
        return max(
            (now - item.enqueued_at for line in self._waiting.values() for item in line),
            default=0.0,
        )

    def has_work(self) -> bool:
        return bool(self._waiting or self._running or self._cancelled)
