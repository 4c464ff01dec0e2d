"""Flows as stages of the pipeline: ``model: "flow:NAME"`` runs the tenant's published
flow around the generation.

The pre steps run on the last user message (in a worker thread: a long input must not
hold up the event loop); unless one blocks, the flow's model answers the rendered
messages; the post steps run on the answer. Post steps need the whole answer, so the
model is asked for it whole and a streamed flow request gets the final text as one chunk.
The reply is an OpenAI chat completion with ``model: flow:NAME`` and an ``inhouse``
object: flow name and version, a block if any, content labels and, when asked for
(``X-Inhouse-Trace: 1``), each step's timing and decision (never content).

A flow's reservation covers every model call it may make (the answer, and one more
per post step that may ask again) with room for pre steps that lengthen the input;
a request whose pre-processed input outgrows that room is refused (413).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any

import orjson

from inhouse.errors import InvalidRequestError, NotFoundError, PayloadTooLargeError
from inhouse.flows.published import PublishedFlows
from inhouse.flows.runner import CompiledFlow, FlowRun
from inhouse.flows.spec import FLOW_NAME
from inhouse.flows.violations import ViolationCounter
from inhouse.gateway.admission import TEMPLATE_ALLOWANCE, prompt_bound
from inhouse.gateway.context import FlowState, RequestContext
from inhouse.monitor.metrics import GatewayMetrics
from inhouse.protocol import sse
from inhouse.protocol.hints import RouteHints
from inhouse.protocol.openai import ChatCompletionRequest, TextPart
from inhouse.protocol.types import Tier
from inhouse.security.audit import AuditEvent, AuditLog
from inhouse.tenancy.models import Principal

FLOW_PREFIX = "flow:"
PRE_STEP_GROWTH = 2
"""Pre steps (masking, normalisation) may make the input up to this many times longer."""
MESSAGES_OVERHEAD = 256
"""Bytes of JSON around the flow's messages (roles, field names, sampling fields)."""
REPAIR_ALLOWANCE = 8192
"""Prompt tokens the instruction of one repair may add (it quotes the schema)."""

Ask = Callable[[list[dict[str, str]]], Coroutine[Any, Any, str]]
"""Ask the flow's model: messages in, the answer's text out (metered with the request)."""


def is_flow(model: str) -> bool:
    return model.startswith(FLOW_PREFIX)


def last_user_text(request: ChatCompletionRequest) -> str:
    for message in reversed(request.messages):
        if message.role == "user" and message.content is not None:
            if isinstance(message.content, str):
                return message.content
            return "".join(
                part.text or "" for part in message.content if isinstance(part, TextPart)
            )
    raise InvalidRequestError("a flow needs a user message", param="messages")


def _variables(request: ChatCompletionRequest) -> dict[str, str]:
    extra = request.model_extra or {}
    raw = extra.get("metadata") or {}
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise InvalidRequestError("metadata: a flow's variables are strings", param="metadata")
    return {str(k): v for k, v in raw.items()}


def _chat(ctx: RequestContext) -> ChatCompletionRequest:
    if not isinstance(ctx.request, ChatCompletionRequest):
        raise InvalidRequestError("flows answer chat completions", param="model")
    return ctx.request


def _flow(ctx: RequestContext) -> FlowState:
    assert ctx.flow is not None
    return ctx.flow


class FlowStage:
    """Everything a flow request needs besides the generation itself."""

    def __init__(
        self,
        flows: PublishedFlows,
        *,
        violations: ViolationCounter | None = None,
        audit: AuditLog | None = None,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.flows = flows
        self.violations = violations
        self.audit = audit
        self.metrics = metrics

    async def published(self, principal: Principal, model: str) -> CompiledFlow:
        """The tenant's published flow ``flow:NAME``; 404 like an unknown model."""
        name = model.removeprefix(FLOW_PREFIX)
        flow = await self.flows.get(principal.tenant_id, name) if FLOW_NAME.match(name) else None
        if flow is None:
            raise NotFoundError(
                f"The model '{model}' does not exist or you do not have access to it.",
                param="model",
                code="model_not_found",
            )
        return flow

    def begin(self, ctx: RequestContext, flow: CompiledFlow, *, counted: bool) -> FlowState:
        """The request's flow state, with the prompt room its model call has: the input
        (which pre steps may lengthen) in the flow's system prompt and template."""
        model = flow.spec.model
        fixed = (
            len(orjson.dumps(model.system_prompt or ""))
            + len(orjson.dumps(model.template))
            + len(model.alias)
            + MESSAGES_OVERHEAD
        )
        allowance = PRE_STEP_GROWTH * prompt_bound(_chat(ctx)) + fixed + TEMPLATE_ALLOWANCE
        return FlowState(flow, counted=counted, prompt_allowance=allowance)

    # -- admit -------------------------------------------------------------------------
    def reservation(self, ctx: RequestContext, completion_bound: int) -> int:
        """Tokens for every model call the flow may make."""
        state = _flow(ctx)
        completion = state.flow.spec.model.max_tokens or completion_bound
        calls = state.flow.max_model_calls
        repair_prompt = state.prompt_allowance + completion + REPAIR_ALLOWANCE
        return state.prompt_allowance + completion + (calls - 1) * (repair_prompt + completion)

    # -- pre steps ------------------------------------------------------------------------
    async def pre(self, ctx: RequestContext) -> None:
        """The suspension check, the pre steps and the violation count, in one thread hop;
        a blocked input is audited (category, never content)."""
        state, request, principal = _flow(ctx), _chat(ctx), ctx.principal
        subject = request.user or principal.key_id
        text, variables = last_user_text(request), _variables(request)
        violations = self.violations if state.counted else None

        def pre_process() -> FlowRun:
            if violations is not None:
                violations.check(principal.tenant_id, subject)
            started = state.flow.start(text, user=request.user, variables=variables)
            if violations is not None:
                violations.record(principal.tenant_id, subject, blocked=started.blocked)
            return started

        state.run = await asyncio.to_thread(pre_process)
        if state.run.blocked and state.counted:
            await self._audit_block(principal, state, subject)

    def blocked(self, ctx: RequestContext) -> bool:
        run = _flow(ctx).run
        return run is not None and run.blocked

    def model_request(
        self, ctx: RequestContext, messages: list[dict[str, str]], completion_bound: int | None
    ) -> ChatCompletionRequest:
        """What the flow's model is asked, whole (post steps need the whole answer)."""
        state = _flow(ctx)
        model = state.flow.spec.model
        fields: dict[str, Any] = {"model": model.alias, "messages": messages, "stream": False}
        for name in ("temperature", "top_p", "max_tokens"):
            value = getattr(model, name)
            if value is not None:
                fields[name] = value
        if model.max_tokens is None and completion_bound is not None:
            fields["max_tokens"] = completion_bound
        if ctx.request.user is not None:
            fields["user"] = ctx.request.user
        request = ChatCompletionRequest.model_validate(fields)
        # The first call's prompt is the pre-processed input: it must fit the room that was
        # reserved. A repair adds the first answer (at most max_tokens) and an instruction,
        # both inside its reservation by construction.
        if not state.answer_ids and prompt_bound(request) > state.prompt_allowance:
            raise PayloadTooLargeError(
                "the input grew too long in the flow's pre-processing; send a shorter one"
            )
        return request

    def route_hints(self, ctx: RequestContext) -> RouteHints:
        """The flow's tier and routing policy, and what its ``features`` step found."""
        state = _flow(ctx)
        assert state.run is not None
        features, caller = state.run.context.features, ctx.hints
        tasks, language = features.get("tasks"), features.get("language")
        tier = state.flow.spec.model.tier
        return RouteHints(
            tier=Tier(tier) if tier is not None else caller.tier,
            tasks=frozenset(tasks) if isinstance(tasks, list) else frozenset(),
            language=language if isinstance(language, str) else None,
            policy=state.flow.spec.model.routing,
            priority=caller.priority,
        )

    # -- post steps -----------------------------------------------------------------------
    async def post(self, ctx: RequestContext, output: str, ask: Ask) -> None:
        """The post steps on the model's output, in a worker thread; a step that asks the
        model again (a JSON repair) gets its answer from the event loop."""
        state = _flow(ctx)
        run = state.run
        assert run is not None
        loop = asyncio.get_running_loop()
        calls_left = state.flow.max_model_calls - 1

        def regenerate(instruction: str) -> str:
            nonlocal calls_left
            if calls_left <= 0:
                raise RuntimeError("a post step asked the model more often than it declared")
            calls_left -= 1
            messages = [
                *run.messages,
                {"role": "assistant", "content": output},
                {"role": "user", "content": instruction},
            ]
            return asyncio.run_coroutine_threadsafe(ask(messages), loop).result()

        await asyncio.to_thread(state.flow.finish, run, output, regenerate=regenerate)

    # -- respond --------------------------------------------------------------------------
    def reply_body(self, ctx: RequestContext) -> dict[str, Any]:
        state = _flow(ctx)
        run = state.run
        assert run is not None
        self._observe_steps(ctx, state, run)
        context = run.context
        finish_reason = "content_filter" if context.blocked is not None else state.finish_reason
        text = context.blocked.message if context.blocked is not None else context.text
        inhouse: dict[str, Any] = {
            "flow": state.flow.spec.name,
            "version": state.flow.version,
            "blocked": None
            if context.blocked is None
            else {"step": context.blocked.step, "category": context.blocked.category},
            "flags": context.flags,
            "model_request_ids": state.answer_ids,
            **context.metadata,
        }
        if ctx.trace or not state.counted:
            inhouse["trace"] = [
                {
                    "step": t.step,
                    "stage": t.stage.value,
                    "micros": round(t.micros, 1),
                    "decision": t.decision,
                    "details": t.details,
                }
                for t in run.trace
            ]
        usage = ctx.usage
        return {
            "id": ctx.request_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": ctx.request.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens,
            },
            "inhouse": inhouse,
        }

    def _observe_steps(self, ctx: RequestContext, state: FlowState, run: FlowRun) -> None:
        if self.metrics is None or not state.counted:
            return
        for step in run.trace:
            self.metrics.observe_flow_step(
                ctx.principal.tenant_name,
                state.flow.spec.name,
                step.step,
                step.micros / 1e6,
                step.decision,
            )

    async def _audit_block(self, principal: Principal, state: FlowState, subject: str) -> None:
        blocked = state.run.context.blocked if state.run is not None else None
        if self.audit is None or blocked is None:
            return
        event = AuditEvent(
            principal.key_id,
            "flow.block",
            principal.tenant_id,
            target=f"flow:{state.flow.spec.name}",
            outcome="denied",
            details={"step": blocked.step, "category": blocked.category, "user": subject[:256]},
        )
        await asyncio.to_thread(self.audit.record, event)


async def as_stream(body: dict[str, Any], include_usage: bool) -> AsyncGenerator[bytes, None]:
    """A flow's whole answer as a stream: the text in one chunk, then the finish."""
    base = {"id": body["id"], "object": "chat.completion.chunk", "created": body["created"]}
    base["model"] = body["model"]
    choice = body["choices"][0]
    first = {"index": 0, "delta": {"role": "assistant", "content": choice["message"]["content"]}}
    yield sse.event(
        {**base, "choices": [{**first, "finish_reason": None}], "inhouse": body["inhouse"]}
    )
    last = {"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}
    yield sse.event({**base, "choices": [last]})
    if include_usage:
        yield sse.event({**base, "choices": [], "usage": body["usage"]})
    yield sse.DONE
