"""The node's HTTP API: OpenAI routes for its model, status, health and metrics.

Every route but the health checks needs ``Authorization: Bearer <node token>``; the
gateway sets ``X-Inhouse-Priority: high|normal|low`` from the caller's tenant.
"""

from __future__ import annotations

import gc
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from inhouse.config import Settings
from inhouse.engine.local import LocalEngine
from inhouse.errors import AuthenticationError, NotFoundError
from inhouse.monitor.metrics import GatewayMetrics
from inhouse.node.registration import NodeToken, Registrar, Registration, token_file
from inhouse.node.service import NodeService
from inhouse.protocol.bearer import bearer_token
from inhouse.protocol.body import BodyBounds, parse_generation, read_body
from inhouse.protocol.errors import install_error_handlers
from inhouse.protocol.hints import PRIORITY_HEADER, parse_priority_hint
from inhouse.protocol.http import new_fastapi, respond
from inhouse.protocol.openai import ChatCompletionRequest, CompletionRequest
from inhouse.protocol.security_headers import SecurityHeaders
from inhouse.protocol.types import Priority

R = TypeVar("R", ChatCompletionRequest, CompletionRequest)


def create_node_app(
    settings: Settings,
    engine: LocalEngine,
    token: str,
    registration: Registration | None = None,
) -> FastAPI:
    """The node's app; with ``registration``, it registers itself with that gateway once
    its model is loaded, and again every heartbeat (``inhouse.node.registration``)."""
    service = NodeService(engine, GatewayMetrics())

    def capacity() -> int:
        scheduler = engine.scheduler
        return scheduler.limits.max_running if scheduler else settings.engine.max_running_sequences

    accepted = NodeToken(
        token,
        token_file(settings.data_dir, registration.advertise_url)
        if registration is not None
        else settings.data_dir / "node-token-unregistered",
    )
    server = settings.server
    bounds = BodyBounds(server.max_messages, server.max_json_values, server.max_prompt_characters)

    def authorize(request: Request) -> None:
        given = bearer_token(request.headers.get("authorization")).encode()
        if not hmac.compare_digest(given, accepted.value.encode()):
            raise AuthenticationError("missing or wrong node token")

    def priority_of(request: Request) -> Priority:
        return parse_priority_hint(request.headers.get(PRIORITY_HEADER)) or Priority.NORMAL

    async def chat(request: Request) -> Response:
        authorize(request)
        body = await read_body(request, settings.server.max_body_bytes)
        parsed = parse_generation(ChatCompletionRequest, body, bounds)
        return respond(await service.answer(_for_this_model(parsed, engine), priority_of(request)))

    async def complete(request: Request) -> Response:
        authorize(request)
        body = await read_body(request, settings.server.max_body_bytes)
        parsed = parse_generation(CompletionRequest, body, bounds)
        return respond(await service.answer(_for_this_model(parsed, engine), priority_of(request)))

    async def models(request: Request) -> Response:
        authorize(request)
        card = {"id": engine.name, "object": "model", "created": 0, "owned_by": "inhouse"}
        return JSONResponse({"object": "list", "data": [card]})

    async def status(request: Request) -> Response:
        authorize(request)
        return JSONResponse(service.status().model_dump())

    async def metrics(request: Request) -> Response:
        authorize(request)
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_request: Request) -> Response:
        ready = engine.ready
        return JSONResponse({"status": "ready" if ready else "loading"}, 200 if ready else 503)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        registrar = None
        if registration is not None:
            registrar = Registrar(
                registration,
                settings.gateway,
                ready=lambda: engine.ready,
                capacity=capacity,
                token=accepted,
            )
            registrar.start()
        gc.freeze()
        try:
            yield
        finally:
            if registrar is not None:
                await registrar.close()
            await engine.close()

    app = new_fastapi("inhouse node", lifespan)
    install_error_handlers(app)
    app.add_middleware(SecurityHeaders)
    app.router.routes[0:0] = [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", complete, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/node/status", status, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
    return app


def _for_this_model(request: R, engine: LocalEngine) -> R:
    if request.model != engine.name:
        raise NotFoundError(
            f"this node serves {engine.name!r}, not {request.model!r}",
            param="model",
            code="model_not_found",
        )
    return request
