"""The ASGI application: ``create_app(settings)`` and its lifespan."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from inhouse.api import (
    admin_routes,
    auth_routes,
    flow_admin_routes,
    flow_routes,
    health_routes,
    node_routes,
    openai_routes,
)
from inhouse.api.access import check_every_route_declares_a_permission, declare_public
from inhouse.api.body_limit import BodyLimit
from inhouse.api.header_limit import HeaderLimit
from inhouse.api.openapi import document_inference_routes
from inhouse.config import Settings
from inhouse.gateway.services import build_services
from inhouse.protocol.errors import install_error_handlers
from inhouse.protocol.http import new_fastapi
from inhouse.protocol.security_headers import SecurityHeaders


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(settings)
        app.state.services = services
        await services.start()
        # Everything built so far (torch, transformers, the app) lives as long as the
        # process: keep it out of the collector's full passes, which otherwise stall
        # the event loop for tens to hundreds of milliseconds.
        gc.freeze()
        try:
            yield
        finally:
            await services.close()

    app = new_fastapi("inhouse", lifespan)
    install_error_handlers(app)
    inference_paths = frozenset(route.path for route in openai_routes.inference_routes)
    app.add_middleware(
        BodyLimit, max_bytes=settings.server.max_body_bytes, skip_paths=inference_paths
    )
    app.add_middleware(HeaderLimit, max_bytes=settings.server.max_header_bytes)
    app.add_middleware(SecurityHeaders)
    app.include_router(health_routes.router)
    app.include_router(openai_routes.router)
    app.include_router(admin_routes.router)
    app.include_router(auth_routes.router)
    app.include_router(flow_routes.router)
    app.include_router(node_routes.router)
    app.include_router(flow_admin_routes.router)
    app.router.routes[0:0] = openai_routes.inference_routes  # the hot path matches first
    document_inference_routes(app)
    if app.openapi_url is not None:
        declare_public(app, app.openapi_url)
    check_every_route_declares_a_permission(app)
    return app
