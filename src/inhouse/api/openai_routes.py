"""The OpenAI-compatible API under /v1."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from inhouse.api.body import parse_body, read_body
from inhouse.api.deps import PrincipalDep, ServicesDep
from inhouse.gateway.protocol import ChatCompletionRequest, CompletionRequest, ModelList
from inhouse.gateway.service import JsonReply, Reply

router = APIRouter(prefix="/v1", tags=["openai"])

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _respond(reply: Reply) -> Response:
    headers = {"X-Request-Id": reply.request_id}
    if isinstance(reply, JsonReply):
        return Response(reply.body, media_type="application/json", headers=headers)
    return StreamingResponse(
        reply.events, media_type="text/event-stream", headers={**headers, **_SSE_HEADERS}
    )


@router.get("/models", response_model=ModelList)
async def list_models(services: ServicesDep, principal: PrincipalDep) -> ModelList:
    return services.gateway.list_models(principal)


@router.post(
    "/chat/completions",
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}
                }
            },
            "required": True,
        }
    },
)
async def chat_completions(
    request: Request, services: ServicesDep, principal: PrincipalDep
) -> Response:
    body = await read_body(request, services.settings.server.max_body_bytes)
    chat = parse_body(ChatCompletionRequest, body)
    return _respond(await services.gateway.chat(principal, chat))


@router.post(
    "/completions",
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/CompletionRequest"}}
            },
            "required": True,
        }
    },
)
async def completions(request: Request, services: ServicesDep, principal: PrincipalDep) -> Response:
    body = await read_body(request, services.settings.server.max_body_bytes)
    completion = parse_body(CompletionRequest, body)
    return _respond(await services.gateway.complete(principal, completion))
