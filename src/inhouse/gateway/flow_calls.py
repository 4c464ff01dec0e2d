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
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import orjson

from inhouse.errors import InvalidRequestError, NotFoundError, UpstreamError
from inhouse.flows.published import PublishedFlows
from inhouse.flows.runner import CompiledFlow, FlowRun
from inhouse.flows.violations import ViolationCounter
from inhouse.gateway.protocol import ChatCompletionRequest, TextPart
from inhouse.gateway.replies import JsonReply, Reply, StreamReply
from inhouse.monitor.metrics import GatewayMetrics
from inhouse.tenancy.models import Principal

FLOW_PREFIX = "flow:"

Generate = Callable[[Principal, ChatCompletionRequest], Awaitable[Reply]]


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


async def answer(
    flows: PublishedFlows,
    generate: Generate,
    principal: Principal,
    request: ChatCompletionRequest,
    *,
    request_id: str,
    trace: bool,
    metrics: GatewayMetrics | None = None,
    violations: ViolationCounter | None = None,
) -> Reply:
    name = request.model.removeprefix(FLOW_PREFIX)
    flow = await flows.get(principal.tenant_id, name)
    if flow is None:
        raise NotFoundError(
            f"The model '{request.model}' does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )
    subject = request.user or principal.key_id
    if violations is not None:
        await asyncio.to_thread(violations.check, principal.tenant_id, subject)
    run = flow.start(last_user_text(request), user=request.user, variables=_variables(request))
    if violations is not None:
        await asyncio.to_thread(
            violations.record, principal.tenant_id, subject, blocked=run.blocked
        )
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    finish_reason = "content_filter"
    if not run.blocked:
        model_reply = await generate(principal, _model_request(flow, run, request))
        if not isinstance(model_reply, JsonReply):
            raise UpstreamError("the flow's model answered with a stream")
        answer_body = orjson.loads(model_reply.body)
        usage = answer_body.get("usage") or usage
        choice = answer_body["choices"][0]
        finish_reason = choice.get("finish_reason") or "stop"
        flow.finish(run, choice["message"]["content"] or "")
        if run.blocked:
            finish_reason = "content_filter"
    if metrics is not None:
        for step in run.trace:
            metrics.observe_flow_step(name, step.step, step.micros / 1e6, step.decision)
    body = _completion(request, request_id, flow, run, usage, finish_reason, trace)
    if request.stream:
        return StreamReply(_as_stream(body, request.include_usage_in_stream), request_id)
    return JsonReply(orjson.dumps(body), request_id)


def _model_request(
    flow: CompiledFlow, run: FlowRun, request: ChatCompletionRequest
) -> ChatCompletionRequest:
    model = flow.spec.model
    fields: dict[str, Any] = {"model": model.alias, "messages": run.messages, "stream": False}
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
    usage: dict[str, Any],
    finish_reason: str,
    trace: bool,
) -> dict[str, Any]:
    context = run.context
    text = context.blocked.message if context.blocked is not None else context.text
    inhouse: dict[str, Any] = {
        "flow": flow.spec.name,
        "version": flow.version,
        "blocked": None
        if context.blocked is None
        else {"step": context.blocked.step, "category": context.blocked.category},
        "flags": context.flags,
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
        "usage": usage,
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
