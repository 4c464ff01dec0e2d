"""A bound on request headers: the HTTP parser under uvicorn has none of its own.

Requests whose header lines add up to more than ``server.max_header_bytes`` are answered
431 in the OpenAI error format before any route, authentication included, runs.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from inhouse.protocol.errors import error_response


class HeaderLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = sum(len(name) + len(value) + 4 for name, value in scope["headers"])
            if size > self.max_bytes:
                response = error_response(
                    431,
                    f"Request headers total {size} bytes; the limit is {self.max_bytes}.",
                    "invalid_request_error",
                    code="request_headers_too_large",
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
