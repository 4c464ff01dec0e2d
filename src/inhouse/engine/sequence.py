"""One sequence's state in the engine: its sampling, stop strings, length and output."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from collections.abc import Sequence as Seq

import torch

from inhouse.engine.base import FinishReason, GenerationChunk, SamplingParams
from inhouse.engine.sampling import make_generator, next_token
from inhouse.engine.text_stream import StopStringStream
from inhouse.errors import InhouseError
from inhouse.protocol.types import TokenUsage


class SequenceState:
    """Token handling runs in the model's thread; delivery runs in the event loop."""

    def __init__(
        self,
        seq_id: int,
        prompt_ids: list[int],
        max_tokens: int,
        params: SamplingParams,
        eos_ids: frozenset[int],
        decode: Callable[[Seq[int]], str],
    ) -> None:
        self.seq_id = seq_id
        self.prompt_ids = prompt_ids
        self.max_tokens = max_tokens
        self.params = params
        self.greedy = params.greedy
        self._eos_ids = eos_ids
        self._generator = make_generator(params)
        self._text = StopStringStream(decode, params.stop)
        self._generated = 0
        self._output_ids: list[int] = []
        self._queue: asyncio.Queue[GenerationChunk | InhouseError] = asyncio.Queue()

    # -- in the model's thread -----------------------------------------------------------
    def sample(self, logits: torch.Tensor) -> int:
        return next_token(logits, self.params, self._generator)

    def accept(self, token: int) -> GenerationChunk:
        """Take the next token; the chunk carries new text and, at the end, why it ended."""
        self._generated += 1
        self._output_ids.append(token)
        if token in self._eos_ids:
            return self._chunk(self._text.finish(), FinishReason.STOP)
        delta = self._text.add(token)
        if delta.stopped:
            return self._chunk(delta.text, FinishReason.STOP)
        if self._generated >= self.max_tokens:
            return self._chunk(delta.text + self._text.finish(), FinishReason.LENGTH)
        return self._chunk(delta.text, None)

    @property
    def prefill_ids(self) -> list[int]:
        """What a prefill runs: the prompt, and after a preemption the output so far."""
        return self.prompt_ids + self._output_ids if self._output_ids else self.prompt_ids

    def _chunk(self, text: str, finish: FinishReason | None) -> GenerationChunk:
        usage = TokenUsage(prompt_tokens=len(self.prompt_ids), completion_tokens=self._generated)
        return GenerationChunk(text, finish_reason=finish, usage=usage)

    # -- in the event loop -----------------------------------------------------------------
    def deliver(self, chunk: GenerationChunk) -> None:
        self._queue.put_nowait(chunk)

    def fail(self, error: InhouseError) -> None:
        self._queue.put_nowait(error)

    async def next_chunk(self) -> GenerationChunk:
        item = await self._queue.get()
        if isinstance(item, InhouseError):
            raise item
        return item


class ThroughputMeter:
    """Generated tokens per second over a sliding window."""

    def __init__(self, window_seconds: float = 60.0) -> None:
        self._window = window_seconds
        self._samples: deque[tuple[float, int]] = deque()
        self._total = 0

    def add(self, now: float, tokens: int) -> None:
        self._samples.append((now, tokens))
        self._total += tokens
        self._trim(now)

    def per_second(self, now: float) -> float:
        self._trim(now)
        if not self._samples:
            return 0.0
        span = max(now - self._samples[0][0], 1.0)
        return self._total / span

    def _trim(self, now: float) -> None:
        while self._samples and self._samples[0][0] < now - self._window:
            self._total -= self._samples.popleft()[1]
