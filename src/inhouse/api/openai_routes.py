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
from starlette.responses import Response
from starlette.routing import Route

from inhouse.api.access import Require, protected
from inhouse.api.deps import ServicesDep, services_of
from inhouse.gateway.context import Endpoint
from inhouse.protocol.body import parse_generation, read_body
from inhouse.protocol.hints import route_hints
from inhouse.protocol.http import respond
from inhouse.protocol.openai import ChatCompletionRequest, CompletionRequest, ModelList
from inhouse.tenancy.models import Principal
from inhouse.tenancy.permissions import Permission

router = APIRouter(prefix="/v1", tags=["openai"])


@router.get("/models", response_model=ModelList)
async def list_models(
    services: ServicesDep,
    principal: Annotated[Principal, Depends(Require(Permission.MODELS_READ))],
) -> ModelList:
    return services.pipeline.list_models(principal)


@protected(Permission.INFERENCE)
async def chat_completions(request: Request, principal: Principal) -> Response:
    services = services_of(request)
    body = await read_body(request, services.settings.server.max_body_bytes)
    chat = parse_generation(ChatCompletionRequest, body, services.body_bounds)
    trace = request.headers.get("x-inhouse-trace") == "1"
    reply = await services.pipeline.handle(
        principal, chat, Endpoint.CHAT, hints=route_hints(request.headers), trace=trace
    )
    return respond(reply)


@protected(Permission.INFERENCE)
async def completions(request: Request, principal: Principal) -> Response:
    services = services_of(request)
    body = await read_body(request, services.settings.server.max_body_bytes)
    completion = parse_generation(CompletionRequest, body, services.body_bounds)
    reply = await services.pipeline.handle(
        principal, completion, Endpoint.COMPLETIONS, hints=route_hints(request.headers)
    )
    return respond(reply)


inference_routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
]
