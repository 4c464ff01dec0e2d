"""Errors to HTTP, in one place: the OpenAI error format, no internals in any body.

Every inhouse HTTP server (the gateway, ``inhouse node``) installs these handlers."""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from inhouse.errors import InhouseError, RateLimitError
from inhouse.protocol.body import is_type_tag
from inhouse.protocol.security_headers import SECURITY_HEADERS

log = logging.getLogger(__name__)


def error_response(
    status: int,
    message: str,
    error_type: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


def _inhouse_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InhouseError)
    headers = None
    if isinstance(exc, RateLimitError):
        headers = {"Retry-After": str(max(1, round(exc.retry_after_seconds)))}
    return error_response(
        exc.status_code,
        exc.message,
        exc.error_type,
        param=exc.param,
        code=exc.code,
        headers=headers,
    )


def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    error_type = "invalid_request_error" if exc.status_code < 500 else "server_error"
    return error_response(
        exc.status_code,
        str(exc.detail),
        error_type,
        code=str(exc.status_code),
        headers=dict(exc.headers) if exc.headers else None,
    )


_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})
"""Where FastAPI found a parameter, first in an error's location: not part of the name."""


def _validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    parts = [str(part) for part in first.get("loc", ())]
    if parts and parts[0] in _LOCATIONS:
        parts = parts[1:]
    location = [part for part in parts if not is_type_tag(part)]
    return error_response(
        400,
        f"{'.'.join(location) or 'request'}: {first.get('msg', 'invalid')}",
        "invalid_request_error",
        param=".".join(location) or None,
    )


def _unexpected_error(_request: Request, exc: Exception) -> Response:
    log.error("unhandled error", exc_info=exc)
    # This handler answers outside every middleware: the security headers go on here.
    return error_response(
        500,
        "The server had an error while processing your request.",
        "server_error",
        headers={name.decode(): value.decode() for name, value in SECURITY_HEADERS},
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(InhouseError, _inhouse_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)
