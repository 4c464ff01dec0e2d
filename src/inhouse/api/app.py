"""The ASGI application: ``create_app(settings)`` and its lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from inhouse import __version__
from inhouse.api import health_routes, openai_routes
from inhouse.api.errors import install_error_handlers
from inhouse.config import Settings
from inhouse.gateway.protocol import ChatCompletionRequest, CompletionRequest
from inhouse.gateway.services import build_services


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(settings)
        app.state.services = services
        await services.start()
        try:
            yield
        finally:
            await services.close()

    app = FastAPI(title="inhouse", version=__version__, lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(health_routes.router)
    app.include_router(openai_routes.router)
    _document_request_schemas(app)
    return app


def _document_request_schemas(app: FastAPI) -> None:
    """Routes parse their bodies themselves (for speed and OpenAI errors); show the schemas."""
    original = app.openapi

    def openapi() -> dict[str, object]:
        if app.openapi_schema is None:
            schema = original()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (ChatCompletionRequest, CompletionRequest):
                definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(definition.pop("$defs", {}))
                components[model.__name__] = definition
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
