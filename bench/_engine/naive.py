"""The naive baseline: ``model.generate`` once per request, one request after another.

A sequential server's throughput does not depend on how many clients wait for it, so each prompt
is measured once (greedy decoding is deterministic) and a first-come-first-served queue of C
closed-loop clients is then replayed from those service times: request k of the queue waits for
every request before it.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _engine import cpu
from _engine.workload import messages


@dataclass(frozen=True, slots=True)
class Sample:
    """One measured ``generate`` call: wall seconds, seconds to its first new token, tokens,
    and the cores other processes used meanwhile."""

    service_s: float
    ttft_s: float | None
    tokens: int
    foreign_cores: float | None = None


@dataclass(frozen=True, slots=True)
class Served:
    """One request of the replayed queue, as its client would have seen it."""

    latency_s: float
    ttft_s: float | None
    tokens: int


class _FirstToken:
    """A ``generate`` streamer that notes when the first new token arrives.

    ``generate`` passes the prompt to ``put`` first, then each new token.
    """

    def __init__(self) -> None:
        self.calls = 0
        self.first: float | None = None

    def put(self, value: Any) -> None:
        self.calls += 1
        if self.calls == 2:
            self.first = time.perf_counter()

    def end(self) -> None:
        return None


class NaiveBaseline:
    """The built-in model loaded in this process with plain transformers (float32)."""

    def __init__(self, model_dir: Path, max_tokens: int) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self.max_tokens = max_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
        self.model.eval()  # type: ignore[no-untyped-call]
        self._stop_ids = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id} - {None}
        self._samples: dict[int, Sample] = {}

    def prompt_tokens(self, index: int) -> int:
        return int(self._encode(index)["input_ids"].shape[1])

    def _encode(self, index: int) -> Any:
        return self.tokenizer.apply_chat_template(
            messages(index), add_generation_prompt=True, return_tensors="pt", return_dict=True
        )

    def generate(self, index: int, max_tokens: int | None = None) -> Sample:
        """One ``generate`` call for prompt ``index``, timed."""
        inputs = self._encode(index)
        streamer = _FirstToken()
        before = cpu.mark()
        t0 = time.perf_counter()
        with self._torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=max_tokens or self.max_tokens,
                do_sample=False,
                streamer=streamer,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        service = time.perf_counter() - t0
        foreign = cpu.foreign_cores(before, cpu.mark())
        new = out[0, inputs["input_ids"].shape[1] :].tolist()
        while new and new[-1] in self._stop_ids:
            new.pop()
        ttft = streamer.first - t0 if streamer.first is not None else None
        return Sample(service, ttft, len(new), foreign)

    def sample(self, index: int, on_new: Callable[[int, Sample], None] | None = None) -> Sample:
        """Prompt ``index``'s measurement, taken on first use and reused after."""
        if index not in self._samples:
            self._samples[index] = self.generate(index)
            if on_new is not None:
                on_new(index, self._samples[index])
        return self._samples[index]


def replay_fifo(
    service: Callable[[int], Sample], clients: int, per_client: int
) -> tuple[list[Served], float]:
    """Replay ``clients`` closed-loop clients against one sequential FIFO server.

    Request ``n`` (in the order the server takes them: ``turn * clients + client``) is served in
    ``service(n)`` seconds. Returns what each request's client saw and the makespan.
    """
    arrivals = [(0.0, client, 0) for client in range(clients)]  # (time, client, turn)
    heapq.heapify(arrivals)
    served: list[Served] = []
    clock = 0.0
    while arrivals:
        arrived, client, turn = heapq.heappop(arrivals)
        sample = service(turn * clients + client)
        start = max(clock, arrived)
        clock = start + sample.service_s
        ttft = start - arrived + sample.ttft_s if sample.ttft_s is not None else None
        served.append(Served(clock - arrived, ttft, sample.tokens))
        if turn + 1 < per_client:
            heapq.heappush(arrivals, (clock, client, turn + 1))
    return served, clock
