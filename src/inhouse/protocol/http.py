"""HTTP around the protocol: the FastAPI application every inhouse server starts from, and
a reply (``protocol.replies``) as a Starlette response."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from inhouse import __version__
from inhouse.protocol.replies import JsonReply, Reply, StreamReply

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def new_fastapi(title: str, lifespan: Lifespan) -> FastAPI:
    """A FastAPI application as every inhouse process builds it."""
    return FastAPI(
        title=title,
        version=__version__,
        lifespan=lifespan,
        # The interactive docs pages load scripts from a CDN: off. /openapi.json stays.
        docs_url=None,
        redoc_url=None,
        # Metrics are ours (/metrics); no OpenTelemetry hooks, no exporter from the environment.
        telemetry={"tracing": False, "metrics": False, "logs": False, "auto_configure": False},
    )


class EventStream(StreamingResponse):
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
    return EventStream(reply)
