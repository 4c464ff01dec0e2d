"""OpenAPI documentation of the inference routes, which FastAPI does not see, and of
the errors every route answers in the OpenAI format (FastAPI documents its own 422)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from inhouse.api.access import all_routes
from inhouse.protocol.openai import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
)
from inhouse.tenancy.permissions import Permission

_REF = "#/components/schemas/{model}"
_ERROR_STATUSES = {
    "400": "Invalid body; `param` names the field",
    "401": "Missing, unknown or revoked API key",
    "403": "The key's role does not allow inference",
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

# One server-sent event of a stream (the schema of a text/event-stream is per event).
_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "data": {
            "type": "string",
            "description": "A chunk or an error as JSON; `[DONE]` ends a complete stream",
        }
    },
    "required": ["data"],
}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF.format(model="Error")}}},
    }


def _document_errors(app: FastAPI, schema: dict[str, Any]) -> None:
    """The errors of the routes FastAPI documents, as ``errors.py`` answers them: a
    parameter or body FastAPI refuses is a 400 (not its 422), in the OpenAI format."""
    permissions = {
        (method.lower(), route.path): route.permission
        for route in all_routes(app.routes)
        for method in route.methods
    }
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            responses = operation.setdefault("responses", {})
            refuses = False
            if responses.pop("422", None) is not None:
                responses["400"] = _error("Invalid parameter or body; `param` names it")
                refuses = True
            if permissions.get((method, path), Permission.PUBLIC) is not Permission.PUBLIC:
                operation.setdefault("security", [{"bearer": []}])
                responses["401"] = _error("Missing, unknown, expired or revoked credential")
                responses["403"] = _error("The credential's role or tenant does not allow this")
                refuses = True
            if refuses:
                responses["4XX"] = _error(
                    "Any other refusal, in the same format: something unknown (404), a "
                    "conflict (409), a body over the size limit (413), too many tries (429)"
                )
    schemas = schema.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)


def _operation(summary: str, request: type[BaseModel], answer: type[BaseModel]) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {
            "description": "The answer, or an SSE stream when `stream` is true",
            "content": {
                "application/json": {"schema": {"$ref": _REF.format(model=answer.__name__)}},
                "text/event-stream": {"schema": _EVENT_SCHEMA},
            },
        }
    }
    for status, description in _ERROR_STATUSES.items():
        responses[status] = _error(description)
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
            _document_errors(app, schema)
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
