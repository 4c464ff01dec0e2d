"""``model: "flow:NAME"``: the tenant's published flow around a generation.

The pre steps run on the last user message; unless one blocks, the flow's model answers
the rendered messages (an ordinary request: admission, metering and audit as for any
model, under the model's name); the post steps run on the answer. Post steps need the
whole answer, so a streamed flow request gets the final text as one chunk.
The reply is an OpenAI chat completion with ``model: flow:NAME`` and an ``inhouse``
object: flow name and version, a block if any, content labels and, when asked for
(``X-Inhouse-Trace: 1``), each step's timing and decision (never content).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from inhouse.errors import InvalidRequestError, NotFoundError, UpstreamError
from inhouse.fleet.nodes import Tier
from inhouse.flows.published import PublishedFlows
from inhouse.flows.runner import CompiledFlow, FlowRun
from inhouse.flows.spec import FLOW_NAME
from inhouse.flows.violations import ViolationCounter
from inhouse.gateway.fleet_calls import RouteHints
from inhouse.gateway.protocol import ChatCompletionRequest, TextPart
from inhouse.gateway.replies import JsonReply, Reply, StreamReply
from inhouse.monitor.metrics import GatewayMetrics
from inhouse.security.audit import AuditEvent, AuditLog
from inhouse.tenancy.models import Principal

FLOW_PREFIX = "flow:"


class Generate(Protocol):
    """The gateway's chat call, which a flow's model request goes through."""

    def __call__(
        self, principal: Principal, request: ChatCompletionRequest, *, hints: RouteHints
    ) -> Coroutine[Any, Any, Reply]: ...


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


class FlowCalls:
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

    async def answer(
        self,
        generate: Generate,
        principal: Principal,
        request: ChatCompletionRequest,
        *,
        request_id: str,
        trace: bool,
        hints: RouteHints,
    ) -> Reply:
        name = request.model.removeprefix(FLOW_PREFIX)
        flow = await self.flows.get(principal.tenant_id, name) if FLOW_NAME.match(name) else None
        if flow is None:
            raise NotFoundError(
                f"The model '{request.model}' does not exist or you do not have access to it.",
                param="model",
                code="model_not_found",
            )
        return await self._run(
            generate,
            principal,
            flow,
            request,
            request_id=request_id,
            trace=trace,
            counted=True,
            hints=hints,
        )

    async def trial(
        self,
        generate: Generate,
        principal: Principal,
        flow: CompiledFlow,
        request: ChatCompletionRequest,
        *,
        request_id: str,
    ) -> Reply:
        """Run a flow that is not (yet) published, to test it: the model call is an
        ordinary, metered request; refused inputs neither count against the user nor
        enter the audit log, and no flow metrics are kept. The trace is always given."""
        return await self._run(
            generate,
            principal,
            flow,
            request,
            request_id=request_id,
            trace=True,
            counted=False,
            hints=RouteHints(),
        )

    async def _run(
        self,
        generate: Generate,
        principal: Principal,
        flow: CompiledFlow,
        request: ChatCompletionRequest,
        *,
        request_id: str,
        trace: bool,
        counted: bool,
        hints: RouteHints,
    ) -> Reply:
        name = flow.spec.name
        subject = request.user or principal.key_id
        text, variables = last_user_text(request), _variables(request)
        violations = self.violations if counted else None

        def pre_process() -> FlowRun:
            """In a worker thread, in one hop: the suspension check, the pre steps (a long
            input must not hold up the event loop) and the violation count."""
            if violations is not None:
                violations.check(principal.tenant_id, subject)
            started = flow.start(text, user=request.user, variables=variables)
            if violations is not None:
                violations.record(principal.tenant_id, subject, blocked=started.blocked)
            return started

        run = await asyncio.to_thread(pre_process)
        answer = _Answer()
        if run.blocked:
            if counted:
                await self._audit_block(principal, name, run, subject)
        else:
            hints = _route_hints(flow, run, hints)
            first = await generate(
                principal, _model_request(flow, run.messages, request), hints=hints
            )
            output = answer.take(first)
            loop = asyncio.get_running_loop()

            def regenerate(instruction: str) -> str:
                """For a post step (json repair): ask the model once more, from its thread."""
                messages = [
                    *run.messages,
                    {"role": "assistant", "content": output},
                    {"role": "user", "content": instruction},
                ]
                call = generate(principal, _model_request(flow, messages, request), hints=hints)
                return answer.take(asyncio.run_coroutine_threadsafe(call, loop).result())

            await asyncio.to_thread(flow.finish, run, output, regenerate=regenerate)
        if self.metrics is not None and counted:
            for step in run.trace:
                self.metrics.observe_flow_step(
                    principal.tenant_name, name, step.step, step.micros / 1e6, step.decision
                )
        body = _completion(request, request_id, flow, run, answer, trace)
        if request.stream:
            return StreamReply(_as_stream(body, request.include_usage_in_stream), request_id)
        return JsonReply(orjson.dumps(body), request_id)

    async def _audit_block(
        self, principal: Principal, name: str, run: FlowRun, subject: str
    ) -> None:
        """A refused input is audited (category, never content): no model was called."""
        blocked = run.context.blocked
        if self.audit is None or blocked is None:
            return
        event = AuditEvent(
            principal.key_id,
            "flow.block",
            principal.tenant_id,
            target=f"flow:{name}",
            outcome="denied",
            details={"step": blocked.step, "category": blocked.category, "user": subject[:256]},
        )
        await asyncio.to_thread(self.audit.record, event)


@dataclass(slots=True)
class _Answer:
    """What the model answered, over the first call and a repair: usage adds up."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "content_filter"
    request_ids: list[str] = field(default_factory=list)

    def take(self, reply: Reply) -> str:
        if not isinstance(reply, JsonReply):
            raise UpstreamError("the flow's model answered with a stream")
        try:
            body = orjson.loads(reply.body)
            choice = body["choices"][0]
            content = choice["message"].get("content") or ""
            usage = body.get("usage") or {}
            prompt, completion = (
                int(usage.get("prompt_tokens", 0)),
                int(usage.get("completion_tokens", 0)),
            )
        except (
            orjson.JSONDecodeError,
            KeyError,
            IndexError,
            TypeError,
            ValueError,
            AttributeError,
        ):
            raise UpstreamError("the flow's model answered in an unexpected shape") from None
        if not isinstance(content, str):
            raise UpstreamError("the flow's model answered with content that is not text")
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        self.finish_reason = str(choice.get("finish_reason") or "stop")
        self.request_ids.append(reply.request_id)
        return content

    @property
    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def _route_hints(flow: CompiledFlow, run: FlowRun, caller: RouteHints) -> RouteHints:
    """The flow's tier and routing policy, and what its ``features`` step found."""
    features = run.context.features
    tasks = features.get("tasks")
    language = features.get("language")
    tier = flow.spec.model.tier
    return RouteHints(
        tier=Tier(tier) if tier is not None else caller.tier,
        tasks=frozenset(tasks) if isinstance(tasks, list) else frozenset(),
        language=language if isinstance(language, str) else None,
        policy=flow.spec.model.routing,
        priority=caller.priority,
    )


def _model_request(
    flow: CompiledFlow, messages: list[dict[str, str]], request: ChatCompletionRequest
) -> ChatCompletionRequest:
    model = flow.spec.model
    fields: dict[str, Any] = {"model": model.alias, "messages": messages, "stream": False}
    for name in ("temperature", "top_p", "max_tokens"):
        value = getattr(model, name)
        if value is not None:
            fields[name] = value
    if request.user is not None:
        fields["user"] = request.user
    return ChatCompletionRequest.model_validate(fields)


def _completion(
    request: ChatCompletionRequest,
    request_id: str,
    flow: CompiledFlow,
    run: FlowRun,
    answer: _Answer,
    trace: bool,
) -> dict[str, Any]:
    context = run.context
    finish_reason = "content_filter" if context.blocked is not None else answer.finish_reason
    text = context.blocked.message if context.blocked is not None else context.text
    inhouse: dict[str, Any] = {
        "flow": flow.spec.name,
        "version": flow.version,
        "blocked": None
        if context.blocked is None
        else {"step": context.blocked.step, "category": context.blocked.category},
        "flags": context.flags,
        "model_request_ids": answer.request_ids,
        **context.metadata,
    }
    if trace:
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
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
        "usage": answer.usage,
        "inhouse": inhouse,
    }


async def _as_stream(body: dict[str, Any], include_usage: bool) -> AsyncGenerator[bytes, None]:
    base = {"id": body["id"], "object": "chat.completion.chunk", "created": body["created"]}
    base["model"] = body["model"]
    choice = body["choices"][0]
    first = {"index": 0, "delta": {"role": "assistant", "content": choice["message"]["content"]}}
    yield _event(
        {**base, "choices": [{**first, "finish_reason": None}], "inhouse": body["inhouse"]}
    )
    last = {"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}
    yield _event({**base, "choices": [last]})
    if include_usage:
        yield _event({**base, "choices": [], "usage": body["usage"]})
    yield b"data: [DONE]\n\n"


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"
