"""A fake in-process engine, for tests of the request path without a model.

It behaves like the local engine at its interface: it validates and admits in
``prepare`` (refusing with 429 when ``capacity`` generations are open), then streams
the last user message back word by word, one "token" per word, honouring
``max_tokens`` and stop strings and reporting usage as it goes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from inhouse.engine.base import FinishReason, GenerationChunk, GenerationRequest, GroupLoad
from inhouse.engine.text_stream import StopStringStream
from inhouse.errors import RateLimitError
from inhouse.protocol.types import Priority, TokenUsage


class FakeEngine:
    def __init__(self, name: str, *, capacity: int = 64, step_seconds: float = 0.0) -> None:
        self.name = name
        self.capacity = capacity
        self.step_seconds = step_seconds
        self.open = 0
        self.started = False

    @property
    def ready(self) -> bool:
        return self.started

    def start(self) -> None:
        self.started = True

    async def wait_ready(self) -> None:
        self.start()

    async def close(self) -> None:
        self.started = False

    def load_by_group(self) -> dict[str, GroupLoad]:
        return {"": GroupLoad(running=self.open)} if self.open else {}

    async def prepare(
        self, request: GenerationRequest, priority: Priority = Priority.NORMAL
    ) -> FakeGeneration:
        if self.open >= self.capacity:
            raise RateLimitError("fake engine at capacity", retry_after_seconds=1.0)
        self.open += 1
        text = request.prompt if request.prompt is not None else request.messages[-1].content
        return FakeGeneration(self, text.split(), request)


class FakeGeneration:
    def __init__(self, engine: FakeEngine, words: list[str], request: GenerationRequest) -> None:
        self._engine = engine
        self._words = words
        self._request = request
        self._open = True

    def cancel(self) -> None:
        if self._open:
            self._open = False
            self._engine.open -= 1

    @property
    def prompt_tokens(self) -> int:
        return len(self._words)

    async def stream(self) -> AsyncIterator[GenerationChunk]:
        pieces = [word + " " for word in self._words]
        text = StopStringStream(
            lambda ids: "".join(pieces[i] for i in ids), self._request.params.stop
        )
        limit = self._request.params.max_tokens or len(pieces)
        try:
            for count, _ in enumerate(pieces[:limit], start=1):
                await asyncio.sleep(self._engine.step_seconds)
                delta = text.add(count - 1)
                usage = TokenUsage(self.prompt_tokens, count)
                if delta.stopped:
                    yield GenerationChunk(delta.text, FinishReason.STOP, usage)
                    return
                done = count == min(limit, len(pieces))
                if done:
                    reason = FinishReason.LENGTH if limit < len(pieces) else FinishReason.STOP
                    yield GenerationChunk(delta.text + text.finish(), reason, usage)
                    return
                yield GenerationChunk(delta.text, None, usage)
        finally:
            self.cancel()
