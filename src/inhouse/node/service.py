"""A node: one local engine served over the OpenAI API, with a status for schedulers."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from pydantic import BaseModel

from inhouse.engine.base import Priority, TokenUsage
from inhouse.engine.local import LocalEngine
from inhouse.engine.precision import available_memory_bytes
from inhouse.gateway import local_calls
from inhouse.gateway.protocol import ChatCompletionRequest, CompletionRequest
from inhouse.gateway.replies import Reply
from inhouse.gateway.request_ids import RequestIds
from inhouse.monitor.metrics import GatewayMetrics


class NodeStatus(BaseModel):
    """What the fleet scheduler reads from ``GET /v1/node/status``."""

    models: list[str]
    precision: str
    device: str
    ready: bool
    running: int
    waiting: int
    max_running: int
    tokens_in_flight: int
    max_tokens_in_flight: int
    oldest_wait_seconds: float
    tokens_per_second: float
    memory_rss_bytes: int
    memory_available_bytes: int


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class NodeService:
    def __init__(
        self,
        engine: LocalEngine,
        metrics: GatewayMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self._clock = clock
        self._request_ids = RequestIds()

    async def answer(
        self,
        request: ChatCompletionRequest | CompletionRequest,
        priority: Priority,
    ) -> Reply:
        chat = isinstance(request, ChatCompletionRequest)
        endpoint = "chat.completions" if chat else "completions"
        request_id = self._request_ids.next("chatcmpl" if chat else "cmpl")
        started = self._clock()
        self.metrics.in_flight.inc()
        done = False

        def finish(status: int, usage: TokenUsage) -> None:
            nonlocal done
            if done:
                return
            done = True
            self.metrics.in_flight.dec()
            self.metrics.observe(
                endpoint=endpoint,
                model=self.engine.name,
                status=status,
                seconds=self._clock() - started,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
            )

        try:
            return await local_calls.answer(
                self.engine, request, request_id, self.engine.name, finish, priority
            )
        except BaseException:
            finish(500, TokenUsage())
            raise

    def status(self) -> NodeStatus:
        scheduler = self.engine.scheduler
        now = self._clock()
        return NodeStatus(
            models=[self.engine.name],
            precision=self.engine.precision.value,
            device="cpu",
            ready=self.engine.ready,
            running=scheduler.running if scheduler else 0,
            waiting=scheduler.waiting if scheduler else 0,
            max_running=scheduler.limits.max_running if scheduler else 0,
            tokens_in_flight=scheduler.tokens_in_flight if scheduler else 0,
            max_tokens_in_flight=scheduler.limits.max_tokens_in_flight if scheduler else 0,
            oldest_wait_seconds=scheduler.oldest_wait(now) if scheduler else 0.0,
            tokens_per_second=self.engine.throughput.per_second(now),
            memory_rss_bytes=_rss_bytes(),
            memory_available_bytes=available_memory_bytes(),
        )
