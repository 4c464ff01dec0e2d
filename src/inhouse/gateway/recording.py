"""The record stage: what one request leaves behind, written exactly once whatever
happened (answered, refused, failed, client gone, stream cut).

- the admission reservation is settled with the tokens really used;
- Prometheus: ``inhouse_requests_total``, the latency histogram, tokens, in flight;
- usage (and with it the request's audit entry) for every request that was admitted:
  journalled to disk before the response goes out, written to the database in batches.
  A stream is journalled as in progress when it starts, so that a gateway killed midway
  still leaves its row.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from inhouse.gateway.admission import Admission
from inhouse.gateway.context import RequestContext
from inhouse.monitor.metrics import GatewayMetrics
from inhouse.protocol.types import TokenUsage
from inhouse.tenancy.metering import IN_PROGRESS, UsageEvent, UsageRecorder


class Recording:
    def __init__(
        self,
        recorder: UsageRecorder,
        metrics: GatewayMetrics,
        admission: Admission | None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._recorder = recorder
        self._metrics = metrics
        self._admission = admission
        self.clock = clock

    def began(self) -> float:
        """A request arrived: counted in flight; returns its start time."""
        self._metrics.in_flight.inc()
        return self.clock()

    def stream_started(self, ctx: RequestContext) -> None:
        """Journal a stream as in progress: a gateway killed midway still leaves its row."""
        self._recorder.record(self._usage_event(ctx, IN_PROGRESS, TokenUsage(), 0.0))

    def stream_progress(self, ctx: RequestContext, usage: TokenUsage) -> None:
        """Journal what a running stream has used so far: killed with SIGKILL, the gateway
        still bills what it sent (the row stays in progress, status 0)."""
        if not ctx.recorded:
            seconds = self.clock() - ctx.started
            self._recorder.record(self._usage_event(ctx, IN_PROGRESS, usage, seconds))

    def finish(self, ctx: RequestContext) -> None:
        """Settle, count and record the request; a second call does nothing."""
        if ctx.recorded:
            return
        ctx.recorded = True
        usage, status = ctx.usage, ctx.status
        if ctx.ticket is not None and self._admission is not None:
            self._admission.settle(ctx.ticket, status, usage, generated=ctx.generations > 0)
        seconds = self.clock() - ctx.started
        self._metrics.in_flight.dec()
        self._metrics.observe(
            endpoint=ctx.endpoint.value,
            model=ctx.model,
            status=status,
            seconds=seconds,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
        )
        if ctx.admitted:  # refused before admission: nothing to bill
            self._recorder.record(self._usage_event(ctx, status, usage, seconds))

    def _usage_event(
        self, ctx: RequestContext, status: int, usage: TokenUsage, seconds: float
    ) -> UsageEvent:
        origin = ctx.origin
        return UsageEvent(
            request_id=ctx.request_id,
            created_at=datetime.now(UTC),
            tenant_id=ctx.principal.tenant_id,
            key_id=ctx.principal.key_id,
            model=ctx.model,
            endpoint=ctx.endpoint.value,
            stream=ctx.request.stream,
            status_code=status,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            latency_ms=seconds * 1000.0,
            model_version=origin.model_version if origin is not None else "",
            node=origin.node if origin is not None else "",
        )
