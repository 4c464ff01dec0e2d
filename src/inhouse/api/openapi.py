"""OpenAPI documentation of the inference routes, which FastAPI does not see."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from inhouse.gateway.protocol import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
)

_REF = "#/components/schemas/{model}"
_ERROR_STATUSES = {
    "400": "Invalid body; `param` names the field",
    "401": "Missing, unknown or revoked API key",
    "404": "Unknown model",
    "413": "Prompt over the model's context, or body over the size limit",
    "429": "A limit or a full queue; see Retry-After",
    "502": "A remote engine failed",
    "503": "The model is not loaded",
}
_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
            "required": ["message", "type"],
        }
    },
    "required": ["error"],
}


def _operation(summary: str, request: type[BaseModel], answer: type[BaseModel]) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {
            "description": "The answer, or an SSE stream when `stream` is true",
            "content": {
                "application/json": {"schema": {"$ref": _REF.format(model=answer.__name__)}},
                "text/event-stream": {"schema": {"type": "string"}},
            },
        }
    }
    for status, description in _ERROR_STATUSES.items():
        responses[status] = {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": _REF.format(model="Error")}}},
        }
    return {
        "post": {
            "tags": ["openai"],
            "summary": summary,
            "security": [{"bearer": []}],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": _REF.format(model=request.__name__)}}
                },
            },
            "responses": responses,
        }
    }


def document_inference_routes(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            components = schema.setdefault("components", {})
            schemas = components.setdefault("schemas", {})
            for model in (ChatCompletionRequest, CompletionRequest, ChatCompletion, Completion):
                definition = model.model_json_schema(ref_template=_REF)
                schemas.update(definition.pop("$defs", {}))
                schemas[model.__name__] = definition
            schemas["Error"] = _ERROR_SCHEMA
            components.setdefault("securitySchemes", {})["bearer"] = {
                "type": "http",
                "scheme": "bearer",
            }
            paths = schema.setdefault("paths", {})
            paths["/v1/chat/completions"] = _operation(
                "Chat completion", ChatCompletionRequest, ChatCompletion
            )
            paths["/v1/completions"] = _operation("Text completion", CompletionRequest, Completion)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
