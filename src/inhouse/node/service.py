"""A node: one local engine served over the OpenAI API, with a status for schedulers."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import orjson
from pydantic import BaseModel

from inhouse.engine.client import Answer, EngineRequest, GenerationCall, Origin
from inhouse.engine.local import LocalEngine
from inhouse.engine.local_client import LocalEngineClient
from inhouse.engine.precision import available_memory_bytes
from inhouse.errors import InhouseError
from inhouse.monitor.metrics import GatewayMetrics
from inhouse.protocol import sse
from inhouse.protocol.openai import ChatCompletionRequest
from inhouse.protocol.replies import JsonReply, Reply
from inhouse.protocol.request_ids import RequestIds
from inhouse.protocol.types import Priority, TokenUsage


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
    """Answers the node's OpenAI routes through the local engine's client, and counts
    each request once in the node's metrics."""

    def __init__(
        self,
        engine: LocalEngine,
        metrics: GatewayMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self._client = LocalEngineClient(engine, Origin(model_version=engine.name, node="local"))
        self._clock = clock
        self._request_ids = RequestIds()

    async def answer(self, request: GenerationCall, priority: Priority) -> Reply:
        chat = isinstance(request, ChatCompletionRequest)
        endpoint = "chat.completions" if chat else "completions"
        request_id = self._request_ids.next("chatcmpl" if chat else "cmpl")
        started = self._clock()
        self.metrics.in_flight.inc()

        def finish(status: int, usage: TokenUsage) -> None:
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
            answer = await self._client.generate(EngineRequest(request, request_id, priority))
        except InhouseError as exc:
            finish(exc.status_code, TokenUsage())
            raise
        except BaseException:
            finish(500, TokenUsage())
            raise
        if isinstance(answer, Answer):
            finish(200, answer.usage)
            return JsonReply(orjson.dumps(answer.payload), request_id)
        return sse.stream_reply(
            answer.chunks,
            answer.release,
            request_id=request_id,
            include_usage=request.include_usage_in_stream,
            on_end=lambda tally: finish(tally.status, tally.usage),
        )

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
