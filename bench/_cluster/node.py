"""One simulated node: continuous batching with chunked prefill.

A node runs up to ``capacity`` sequences. While prompts are waiting to be prefilled, it
runs mixed steps of ``a + b x decoding + c x chunk`` seconds, each prefilling up to
``prefill_chunk_tokens`` prompt tokens (first come, first served) and giving every
decoding sequence one token; otherwise it runs decode steps of ``a + b x decoding``
seconds. A sequence's first token comes at the end of the step that finishes its prompt.

Between changes of the batch every decoding sequence advances at the same rate, so the
node keeps one counter of steps done (``steps``) and each sequence finishes when the
counter reaches its own mark: one event per change, not one per token.
"""

from __future__ import annotations

import bisect
import heapq
from collections import deque
from dataclasses import dataclass

from _cluster.fleet import NodeType
from _cluster.workload import Request
from inhouse.fleet.nodes import NodeLoad, NodeSnapshot, NodeSpec
from inhouse.protocol.types import Tier

_EPS = 1e-7


class Job:
    """One request's life in the simulation (mutable, owned by the simulation)."""

    __slots__ = (
        "admitted",
        "completions",
        "fell_back",
        "finished",
        "first_token",
        "kv_bytes",
        "needed_bytes",
        "node",
        "queued",
        "rejected",
        "request",
        "wanted",
    )

    def __init__(self, request: Request, wanted: Tier, needed_bytes: int) -> None:
        self.request = request
        self.wanted = wanted
        """The tier the complexity router picks for it (whatever the policy did)."""
        self.needed_bytes = needed_bytes
        """The KV estimate the scheduler is given (for the wanted tier's model)."""
        self.completions = 0
        self.queued = False
        self.admitted = -1.0
        self.first_token = -1.0
        self.finished = -1.0
        self.node: SimNode | None = None
        self.kv_bytes = 0
        self.fell_back = False
        self.rejected = False


class _Prompt:
    """A prompt being prefilled: its job, the tokens left, its place in the prefill order."""

    __slots__ = ("job", "key", "left")

    def __init__(self, job: Job, key: tuple[int, int]) -> None:
        self.job = job
        self.key = key
        self.left = job.request.prompt_tokens


@dataclass(frozen=True, slots=True)
class Window:
    """The measurement window, in simulated seconds."""

    start: float
    end: float


def _key(prompt: _Prompt) -> tuple[int, int]:
    return prompt.key


class SimNode:
    """A node's state and its counters of use; see the module docstring."""

    def __init__(
        self,
        index: int,
        spec: NodeSpec,
        kind: NodeType,
        window: Window,
        touched: list[SimNode],
        *,
        priority_prefill: bool = False,
    ) -> None:
        self.index = index
        self._priority_prefill = priority_prefill
        self._admissions = 0
        self._touched = touched
        self.scheduled_version = -1
        self.spec = spec
        self.kind = kind
        self.window = window
        self.running = 0
        self.memory_used = 0
        self.peak_running = 0
        self.peak_memory = 0
        self.local: deque[Job] = deque()
        """Requests the node accepted beyond its batch (baselines only)."""
        self._decoding: list[tuple[float, int, Job]] = []
        self._prefill: list[_Prompt] = []
        """Prompts to prefill, in order: arrival, or priority then arrival."""
        self._chunk: list[tuple[_Prompt, int]] = []
        self._steps = 0.0
        self._steps_at = 0.0
        self._rate = 0.0
        self._step_start_steps = 0.0
        self.step_end: float | None = None
        self.version = 0
        self._last = 0.0
        self.slot_seconds = 0.0
        """Occupied batch slots integrated over the window."""
        self.busy_seconds = 0.0
        """Time in the window with at least one sequence."""
        self.work_seconds = 0.0
        """Node time in the window at full-batch efficiency: each step counts the share of
        it that a full batch would have needed for the same tokens (at most all of it)."""
        self._work_fraction = 0.0
        self.busy_total = 0.0
        """Time with at least one sequence, over the whole run."""
        self._snapshot: NodeSnapshot | None = None

    # what the scheduler sees

    def snapshot(self) -> NodeSnapshot:
        if self._snapshot is None:
            free = self.kind.kv_memory_bytes - self.memory_used
            load = NodeLoad(running=self.running, waiting=len(self.local), memory_free_bytes=free)
            self._snapshot = NodeSnapshot(self.spec, load, in_flight=self.running)
        return self._snapshot

    def occupancy(self) -> int:
        return self.running + len(self.local)

    def has_room(self, job: Job) -> bool:
        return (
            self.running < self.kind.capacity
            and self.memory_used + self._kv_bytes(job) <= self.kind.kv_memory_bytes
        )

    # changes

    def admit(self, job: Job, now: float) -> None:
        """Start ``job`` now (the caller checked ``has_room``)."""
        self._account(now)
        self._advance(now)
        job.node = self
        job.admitted = now
        job.kv_bytes = self._kv_bytes(job)
        self.running += 1
        self.memory_used += job.kv_bytes
        self.peak_running = max(self.peak_running, self.running)
        self.peak_memory = max(self.peak_memory, self.memory_used)
        self._admissions += 1
        rank = int(job.request.priority) if self._priority_prefill else 0
        bisect.insort(self._prefill, _Prompt(job, (rank, self._admissions)), key=_key)
        if self.step_end is None:
            self._start_mixed_step(now)
        self._changed()

    def accept(self, job: Job, now: float) -> None:
        """Baselines: start ``job`` when there is room, else queue it at the node."""
        if not self.local and self.has_room(job):
            self.admit(job, now)
        else:
            job.admitted = -1.0
            job.node = self
            self.local.append(job)
            self._changed()

    def next_event(self) -> float | None:
        if self.step_end is not None:
            return self.step_end
        if not self._decoding:
            return None
        return self._steps_at + max(self._decoding[0][0] - self._steps, 0.0) / self._rate

    def on_event(self, now: float) -> list[Job]:
        """The node's own event (a step ended or a sequence finished): the jobs done."""
        self._account(now)
        done: list[Job] = []
        if self.step_end is not None and now >= self.step_end - _EPS:
            self._steps = self._step_start_steps + 1.0
            self._steps_at = now
            self.step_end = None
            for prompt, tokens in self._chunk:
                prompt.left -= tokens
            self._chunk = []
            if self._priority_prefill:
                self._prefill.sort(key=lambda p: (p.left > 0, p.key))
            while self._prefill and self._prefill[0].left <= 0:
                job = self._prefill.pop(0).job
                job.first_token = now
                if job.request.output_tokens <= 1:
                    done.append(job)
                else:
                    mark = self._steps + job.request.output_tokens - 1
                    heapq.heappush(self._decoding, (mark, job.request.id, job))
        else:
            self._advance(now)
        while self._decoding and self._decoding[0][0] <= self._steps + _EPS:
            done.append(heapq.heappop(self._decoding)[2])
        for job in done:
            job.finished = now
            job.completions += 1
            self.running -= 1
            self.memory_used -= job.kv_bytes
        if self.step_end is None:
            if self._prefill:
                self._start_mixed_step(now)
            else:
                self._set_decode_rate()
        self._changed()
        return done

    def pull_local(self, now: float) -> None:
        """Baselines: start queued jobs while there is room, first come first served."""
        while self.local and self.has_room(self.local[0]):
            self.admit(self.local.popleft(), now)

    def finish_accounting(self, now: float) -> None:
        self._account(now)

    # internals

    def _kv_bytes(self, job: Job) -> int:
        tokens = job.request.prompt_tokens + job.request.max_tokens
        return tokens * self.kind.kv_bytes_per_token

    def _changed(self) -> None:
        self.version += 1
        self._snapshot = None
        self._touched.append(self)

    def _advance(self, now: float) -> None:
        if self.step_end is not None:
            return  # a mixed step ends at once; its progress is applied then
        self._steps += (now - self._steps_at) * self._rate
        self._steps_at = now

    def _set_decode_rate(self) -> None:
        batch = len(self._decoding)
        self._rate = 1.0 / self.kind.step_s(batch) if batch else 0.0
        self._work_fraction = self._efficiency(batch, 0)

    def _efficiency(self, batch: int, prefill_tokens: int) -> float:
        """What a step with ``batch`` decodes and ``prefill_tokens`` would cost at full
        batch, over what it costs."""
        kind = self.kind
        per_token = kind.step_s(kind.capacity) / kind.capacity
        ideal = batch * per_token + kind.prefill_per_token_s * prefill_tokens
        actual = kind.step_s(batch, prefill_tokens) if batch or prefill_tokens else 0.0
        return min(ideal / actual, 1.0) if actual else 0.0

    def _start_mixed_step(self, now: float) -> None:
        budget = self.kind.prefill_chunk_tokens
        chunk: list[tuple[_Prompt, int]] = []
        for prompt in self._prefill:
            if budget <= 0:
                break
            tokens = min(prompt.left, budget)
            chunk.append((prompt, tokens))
            budget -= tokens
        self._chunk = chunk
        prefill_tokens = self.kind.prefill_chunk_tokens - budget
        self._step_start_steps = self._steps
        self._steps_at = now
        self.step_end = now + self.kind.step_s(len(self._decoding), prefill_tokens)
        self._work_fraction = self._efficiency(len(self._decoding), prefill_tokens)

    def _account(self, now: float) -> None:
        last, self._last = self._last, now
        if now <= last:
            return
        if self.running:
            self.busy_total += now - last
            start, end = max(last, self.window.start), min(now, self.window.end)
            if end > start:
                self.slot_seconds += self.running * (end - start)
                self.busy_seconds += end - start
                self.work_seconds += self._work_fraction * (end - start)
