"""The request lifecycle: resolve the model, generate, record. The one place that
calls the engine, metering and metrics in order."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial

from inhouse.engine.base import Priority, TokenUsage
from inhouse.errors import EngineUnavailableError, InhouseError, NotFoundError
from inhouse.flows.runner import CompiledFlow
from inhouse.gateway import flow_calls, local_calls, remote_calls
from inhouse.gateway.admission import Admission, GenerationCall
from inhouse.gateway.engines import EnginePool
from inhouse.gateway.fleet_calls import FleetCalls, RouteHints
from inhouse.gateway.flow_calls import FlowCalls
from inhouse.gateway.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    ModelCard,
    ModelList,
)
from inhouse.gateway.replies import JsonReply, Reply, StreamReply
from inhouse.gateway.request_ids import RequestIds
from inhouse.monitor.metrics import UNRESOLVED_MODEL, GatewayMetrics
from inhouse.registry.models import ModelEntry
from inhouse.tenancy.admission import Ticket
from inhouse.tenancy.metering import IN_PROGRESS, UsageEvent, UsageRecorder
from inhouse.tenancy.models import Principal

CHAT_ENDPOINT = "chat.completions"
COMPLETIONS_ENDPOINT = "completions"


class _Call:
    """Bookkeeping of one request: recorded exactly once, whatever happens."""

    def __init__(self, gateway: Gateway, principal: Principal, endpoint: str, stream: bool) -> None:
        self._gateway = gateway
        self.principal = principal
        self._endpoint = endpoint
        self._stream = stream
        self._started = gateway.clock()
        self._done = False
        self.model = UNRESOLVED_MODEL
        self.entry: ModelEntry | None = None
        self.ticket: Ticket | None = None
        self.request_id = gateway.request_ids.next(
            "chatcmpl" if endpoint == CHAT_ENDPOINT else "cmpl"
        )
        gateway.metrics.in_flight.inc()

    def started_stream(self) -> None:
        """Journal a stream as in progress: a gateway killed midway still leaves its row."""
        self._record(IN_PROGRESS, TokenUsage(), 0.0)

    def finish(self, status: int, usage: TokenUsage) -> None:
        if self._done:
            return
        self._done = True
        gateway = self._gateway
        if self.ticket is not None and gateway.admission is not None:
            gateway.admission.settle(self.ticket, status, usage)
        seconds = gateway.clock() - self._started
        gateway.metrics.in_flight.dec()
        gateway.metrics.observe(
            endpoint=self._endpoint,
            model=self.model,
            status=status,
            seconds=seconds,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
        )
        if self.entry is None:
            return  # nothing was generated: no usage to bill
        self._record(status, usage, seconds)

    def _record(self, status: int, usage: TokenUsage, seconds: float) -> None:
        entry = self.entry
        assert entry is not None
        self._gateway.recorder.record(
            UsageEvent(
                request_id=self.request_id,
                created_at=datetime.now(UTC),
                tenant_id=self.principal.tenant_id,
                key_id=self.principal.key_id,
                model=entry.name,
                endpoint=self._endpoint,
                stream=self._stream,
                status_code=status,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                latency_ms=seconds * 1000.0,
                model_version=entry.id,
                node=entry.node_label,
            )
        )


def _both(first: Callable[[], None], then: Callable[[], None] | None) -> Callable[[], None]:
    if then is None:
        return first

    def both() -> None:
        first()
        then()

    return both


class Gateway:
    def __init__(
        self,
        engines: EnginePool,
        recorder: UsageRecorder,
        metrics: GatewayMetrics,
        admission: Admission | None = None,
        clock: Callable[[], float] = time.perf_counter,
        flows: FlowCalls | None = None,
        fleet: FleetCalls | None = None,
    ) -> None:
        self.engines = engines
        self.flows = flows
        self.fleet = fleet
        self.recorder = recorder
        self.metrics = metrics
        self.admission = admission
        self.clock = clock
        self.request_ids = RequestIds()

    def list_models(self, principal: Principal) -> ModelList:
        cards = [
            ModelCard(
                id=e.name,
                created=int(e.created_at.timestamp()),
                owned_by="inhouse" if e.tenant_id is None else principal.tenant_name,
            )
            for e in self.engines.entries()
            if e.visible_to(principal.tenant_id)
        ]
        if self.fleet is not None:
            known = {card.id for card in cards}
            cards += [
                ModelCard(id=name, created=int(self.fleet.created.timestamp()), owned_by="fleet")
                for name in self.fleet.models(principal.tenant_id)
                if name not in known
            ]
        return ModelList(data=cards)

    async def chat(
        self,
        principal: Principal,
        request: ChatCompletionRequest,
        *,
        trace: bool = False,
        hints: RouteHints | None = None,
    ) -> Reply:
        if self.flows is not None and request.model.startswith(flow_calls.FLOW_PREFIX):
            return await self.flows.answer(
                self.chat,
                principal,
                request,
                request_id=self.request_ids.next("chatcmpl"),
                trace=trace,
                hints=hints or RouteHints(),
            )
        return await self._answer(principal, request, CHAT_ENDPOINT, hints or RouteHints())

    async def try_flow(
        self, principal: Principal, flow: CompiledFlow, request: ChatCompletionRequest
    ) -> Reply:
        """Run a flow that is not published (a test before ``apply``), with its trace."""
        if self.flows is None:
            raise EngineUnavailableError("flows are not enabled on this gateway")
        return await self.flows.trial(
            self.chat, principal, flow, request, request_id=self.request_ids.next("chatcmpl")
        )

    async def complete(
        self, principal: Principal, request: CompletionRequest, *, hints: RouteHints | None = None
    ) -> Reply:
        return await self._answer(principal, request, COMPLETIONS_ENDPOINT, hints or RouteHints())

    async def _answer(
        self,
        principal: Principal,
        request: ChatCompletionRequest | CompletionRequest,
        endpoint: str,
        hints: RouteHints,
    ) -> Reply:
        call = _Call(self, principal, endpoint, request.stream)
        try:
            entry, fleet = self._resolve(request.model, principal)
            call.model = entry.name
            priority = Priority.NORMAL
            if self.admission is not None:
                admitted = await self.admission.admit(principal, request, entry)
                request, call.ticket, priority = (
                    admitted.request,
                    admitted.ticket,
                    admitted.priority,
                )
            call.entry = entry
            if request.stream:
                call.started_stream()
            if hints.priority is not None:
                priority = max(priority, hints.priority)  # a hint may lower it, never raise it
            if fleet is not None:
                reply = await self._answer_on_fleet(fleet, call, request, priority, hints)
            elif entry.is_local:
                reply = await self._answer_locally(call, request, entry, priority)
            else:
                reply = await self._answer_remotely(call, request, entry)
        except InhouseError as exc:
            call.finish(exc.status_code, TokenUsage())
            raise
        except BaseException:
            call.finish(500, TokenUsage())
            raise
        if isinstance(reply, StreamReply):
            # Settles a stream whose client left before its first event (its generator's
            # own ``finally`` never runs then); a no-op once the stream has finished.
            return StreamReply(
                reply.events,
                reply.request_id,
                _both(partial(call.finish, 499, TokenUsage()), reply.on_close),
                headers=reply.headers,
            )
        return reply

    def _resolve(self, model: str, principal: Principal) -> tuple[ModelEntry, FleetCalls | None]:
        """The gateway's own models (local, remote) first; a name only nodes serve goes to
        the fleet, so a node cannot take over a model the operator registered."""
        try:
            return self.engines.resolve(model, tenant_id=principal.tenant_id), None
        except NotFoundError:
            if self.fleet is None or not self.fleet.serves(model, principal.tenant_id):
                raise
            return self.fleet.entry(model), self.fleet

    async def _answer_on_fleet(
        self,
        fleet: FleetCalls,
        call: _Call,
        request: ChatCompletionRequest | CompletionRequest,
        priority: Priority,
        hints: RouteHints,
    ) -> Reply:
        def placed(entry: ModelEntry) -> None:
            call.entry = entry

        return await fleet.answer(
            request,
            principal=call.principal,
            priority=priority,
            hints=hints,
            request_id=call.request_id,
            on_placed=placed,
            on_finish=call.finish,
        )

    async def _answer_locally(
        self, call: _Call, request: GenerationCall, entry: ModelEntry, priority: Priority
    ) -> Reply:
        return await local_calls.answer(
            self.engines.local(entry), request, call.request_id, entry.name, call.finish, priority
        )

    async def _answer_remotely(
        self,
        call: _Call,
        request: ChatCompletionRequest | CompletionRequest,
        entry: ModelEntry,
    ) -> Reply:
        client = self.engines.upstream(entry)
        path = "/chat/completions" if isinstance(request, ChatCompletionRequest) else "/completions"
        body = remote_calls.upstream_body(request, entry)
        if request.stream:
            upstream_events = await client.open_stream(path, body)
            events = remote_calls.relay_stream(
                upstream_events,
                model=entry.name,
                include_usage=request.include_usage_in_stream,
                on_finish=call.finish,
            )
            return StreamReply(events, call.request_id)
        payload, usage = await remote_calls.relay_json(client, path, body, entry.name)
        call.finish(200, usage)
        return JsonReply(payload, call.request_id)
