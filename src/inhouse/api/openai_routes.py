"""The OpenAI-compatible API under /v1.

The two inference routes are plain Starlette routes: FastAPI's per-route machinery
(dependency solving, response handling) costs more than everything else the
gateway does for a relayed request (docs/benchmarks.md). They parse and validate
their bodies themselves, and ``openapi.py`` documents them.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from inhouse.api.access import Require, protected
from inhouse.api.body import parse_body, read_body
from inhouse.api.deps import ServicesDep, services_of
from inhouse.gateway.fleet_calls import RouteHints, parse_priority_hint, parse_tier_hint
from inhouse.gateway.protocol import ChatCompletionRequest, CompletionRequest, ModelList
from inhouse.gateway.replies import JsonReply, Reply, StreamReply
from inhouse.tenancy.models import Principal
from inhouse.tenancy.permissions import Permission

router = APIRouter(prefix="/v1", tags=["openai"])

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class _EventStream(StreamingResponse):
    """An SSE response that closes its events and tells the reply when it is over, also
    when the client left before the first event was sent."""

    def __init__(self, reply: StreamReply) -> None:
        headers = {"X-Request-Id": reply.request_id, **_SSE_HEADERS, **reply.headers}
        super().__init__(reply.events, media_type="text/event-stream", headers=headers)
        self._reply = reply

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._reply.events.aclose()
            if self._reply.on_close is not None:
                self._reply.on_close()


def respond(reply: Reply) -> Response:
    if isinstance(reply, JsonReply):
        headers = {"X-Request-Id": reply.request_id, **reply.headers}
        return Response(reply.body, media_type="application/json", headers=headers)
    return _EventStream(reply)


@router.get("/models", response_model=ModelList)
async def list_models(
    services: ServicesDep,
    principal: Annotated[Principal, Depends(Require(Permission.MODELS_READ))],
) -> ModelList:
    return services.gateway.list_models(principal)


@protected(Permission.INFERENCE)
async def chat_completions(request: Request, principal: Principal) -> Response:
    services = services_of(request)
    body = await read_body(request, services.settings.server.max_body_bytes)
    chat = parse_body(ChatCompletionRequest, body)
    trace = request.headers.get("x-inhouse-trace") == "1"
    hints = route_hints(request)
    return respond(await services.gateway.chat(principal, chat, trace=trace, hints=hints))


@protected(Permission.INFERENCE)
async def completions(request: Request, principal: Principal) -> Response:
    services = services_of(request)
    body = await read_body(request, services.settings.server.max_body_bytes)
    completion = parse_body(CompletionRequest, body)
    hints = route_hints(request)
    return respond(await services.gateway.complete(principal, completion, hints=hints))


def route_hints(request: Request) -> RouteHints:
    """``X-Inhouse-Tier`` and ``X-Inhouse-Priority``: the caller's say in routing."""
    headers = request.headers
    return RouteHints(
        tier=parse_tier_hint(headers.get("x-inhouse-tier")),
        priority=parse_priority_hint(headers.get("x-inhouse-priority")),
    )


inference_routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
]
