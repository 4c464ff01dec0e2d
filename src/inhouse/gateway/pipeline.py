"""The life of a request, in one place. Read ``Pipeline.handle`` top to bottom:

    authenticate   the HTTP edge (``api.access``) turns the bearer token into a principal
    resolve        the model name, or ``flow:NAME`` and its model, to an engine client
    admit          quotas and rate limits: a reservation, or 429 naming the limit
    pre steps      a flow's pre-processing (may block the input: answered, not generated)
    route          what the engine schedules by: priority, fair-share group, routing hints
    generate       the engine client: local engine, remote upstream or the fleet's nodes
    post steps     a flow's post-processing of the answer (may ask the model once more)
    respond        JSON, or server-sent events
    record         settle the reservation, metrics, usage and audit: exactly once

Resolve comes before admit because a reservation depends on what answers: a local
engine's default ``max_tokens``, a flow's template and model calls. Recording happens
in the ``finally`` of ``handle``, or, for a stream, when the stream ends or its client
leaves; ``Recording.finish`` runs once whichever comes first.
"""

from __future__ import annotations

import orjson

from inhouse.config import TenancySettings
from inhouse.engine.base import Share
from inhouse.engine.client import Answer, AnswerStream, Caller, EngineRequest, GenerationCall
from inhouse.errors import EngineUnavailableError, InhouseError, PermissionDeniedError
from inhouse.flows.runner import CompiledFlow
from inhouse.gateway.admission import Admission
from inhouse.gateway.context import Endpoint, RequestContext
from inhouse.gateway.engines import EnginePool
from inhouse.gateway.flow_stage import FlowStage, as_stream, is_flow
from inhouse.gateway.recording import Recording
from inhouse.protocol import sse
from inhouse.protocol.hints import NO_HINTS, RouteHints
from inhouse.protocol.openai import ModelList
from inhouse.protocol.replies import JsonReply, Reply, StreamReply
from inhouse.protocol.request_ids import RequestIds
from inhouse.tenancy.models import Principal


class Pipeline:
    def __init__(
        self,
        engines: EnginePool,
        recording: Recording,
        admission: Admission | None,
        tenancy: TenancySettings,
        flows: FlowStage | None = None,
    ) -> None:
        self.engines = engines
        self.recording = recording
        self.admission = admission
        self.flows = flows
        self._weights = tenancy.weights
        self.request_ids = RequestIds()

    def list_models(self, principal: Principal) -> ModelList:
        return self.engines.model_list(principal)

    async def handle(
        self,
        principal: Principal,
        request: GenerationCall,
        endpoint: Endpoint,
        *,
        hints: RouteHints = NO_HINTS,
        trace: bool = False,
        trial: CompiledFlow | None = None,
    ) -> Reply:
        """Answer one request; ``trial``: run this unpublished flow (a test before apply)."""
        request_id = self.request_ids.next(endpoint.id_prefix)
        started = self.recording.began()
        ctx = RequestContext(principal, request, endpoint, request_id, started, hints, trace)
        try:
            await self._resolve(ctx, trial)
            await self._admit(ctx)
            if ctx.flow is not None:
                await self._flows().pre(ctx)
                if self._flows().blocked(ctx):
                    return self._respond_flow(ctx)
            answer = await self._generate(ctx, self._route(ctx))
            if isinstance(answer, AnswerStream):
                return self._respond_stream(ctx, answer)
            if ctx.flow is not None:
                await self._post_steps(ctx, answer)
                return self._respond_flow(ctx)
            return self._respond(ctx, answer)
        except InhouseError as exc:
            ctx.status = exc.status_code
            raise
        finally:
            if not ctx.streaming:
                self.recording.finish(ctx)

    # -- the stages, in order ------------------------------------------------------------
    async def _resolve(self, ctx: RequestContext, trial: CompiledFlow | None) -> None:
        tenant_id, model = ctx.principal.tenant_id, ctx.request.model
        if trial is not None or is_flow(model):
            flow = trial or await self._flows().published(ctx.principal, model)
            ctx.flow = self._flows().begin(ctx, flow, counted=trial is None)
            model = flow.spec.model.alias
        elif ctx.principal.flows_only:
            raise PermissionDeniedError(
                "this key may call flows only (model: flow:NAME)", param="model", code="flows_only"
            )
        ctx.target = self.engines.resolve(model, tenant_id=tenant_id)
        ctx.model = ctx.request.model if ctx.flow is not None else ctx.target.name
        ctx.origin = ctx.target.origin

    async def _admit(self, ctx: RequestContext) -> None:
        assert ctx.target is not None
        if self.admission is not None:
            flows, flow_ctx = self.flows, ctx
            reservation = (
                (lambda bound: flows.reservation(flow_ctx, bound))
                if ctx.flow is not None and flows is not None
                else None
            )
            admitted = await self.admission.admit(
                ctx.principal, ctx.request, is_local=ctx.target.is_local, reservation=reservation
            )
            ctx.request, ctx.ticket = admitted.request, admitted.ticket
            ctx.priority, ctx.completion_bound = admitted.priority, admitted.completion_bound
        ctx.admitted = True
        if ctx.hints.priority is not None:  # a caller may lower its priority, never raise it
            ctx.priority = max(ctx.priority, ctx.hints.priority)

    def _route(self, ctx: RequestContext, body: GenerationCall | None = None) -> EngineRequest:
        hints = ctx.hints
        if ctx.flow is not None:
            hints = self._flows().route_hints(ctx)
            if body is None:
                run = ctx.flow.run
                assert run is not None
                body = self._flows().model_request(ctx, run.messages, ctx.completion_bound)
        principal = ctx.principal
        share = Share(principal.tenant_name, self._weights.get(principal.tenant_name, 1.0))
        caller = Caller(share, principal.tenant_id, principal.tenant_name)
        return EngineRequest(body or ctx.request, ctx.request_id, ctx.priority, caller, hints)

    async def _generate(self, ctx: RequestContext, request: EngineRequest) -> Answer | AnswerStream:
        assert ctx.target is not None
        answer = await ctx.target.engine.generate(request)
        ctx.origin = answer.origin
        if isinstance(answer, Answer):
            ctx.add_usage(answer.usage)
            ctx.generations += 1
        return answer

    async def _post_steps(self, ctx: RequestContext, answer: Answer) -> None:
        flows, state = self._flows(), ctx.flow
        assert state is not None

        def take(answer: Answer) -> str:
            text, state.finish_reason = answer.first_text()
            state.answer_ids.append(str(answer.payload.get("id", "")))
            return text

        async def ask(messages: list[dict[str, str]]) -> str:
            body = flows.model_request(ctx, messages, ctx.completion_bound)
            again = await self._generate(ctx, self._route(ctx, body))
            assert isinstance(again, Answer)
            return take(again)

        await flows.post(ctx, take(answer), ask)

    def _respond(self, ctx: RequestContext, answer: Answer) -> Reply:
        ctx.status = 200
        return JsonReply(orjson.dumps(answer.payload), ctx.request_id, answer.origin.headers)

    def _respond_flow(self, ctx: RequestContext) -> Reply:
        body = self._flows().reply_body(ctx)
        ctx.status = 200
        if ctx.request.stream:
            events = as_stream(body, ctx.request.include_usage_in_stream)
            return StreamReply(events, ctx.request_id)
        return JsonReply(orjson.dumps(body), ctx.request_id, payload=body)

    def _respond_stream(self, ctx: RequestContext, stream: AnswerStream) -> StreamReply:
        ctx.streaming = True
        self.recording.stream_started(ctx)

        def ended(tally: sse.StreamTally) -> None:
            ctx.status = tally.status
            ctx.add_usage(tally.usage)
            ctx.generations += 1
            self.recording.finish(ctx)

        return sse.stream_reply(
            stream.chunks,
            stream.release,
            request_id=ctx.request_id,
            include_usage=ctx.request.include_usage_in_stream,
            on_end=ended,
            headers=stream.origin.headers,
            progress=lambda usage: self.recording.stream_progress(ctx, usage),
        )

    def _flows(self) -> FlowStage:
        if self.flows is None:
            raise EngineUnavailableError("flows are not enabled on this gateway")
        return self.flows
