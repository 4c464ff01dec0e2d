"""What the request path hands back to HTTP: a whole JSON body or an SSE stream."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class JsonReply:
    body: bytes
    request_id: str


@dataclass(frozen=True, slots=True)
class StreamReply:
    events: AsyncGenerator[bytes, None]
    request_id: str
    on_close: Callable[[], None] | None = None
    """Called when the HTTP response ends, however it ends: a stream whose client left
    before its first event never runs its own ``finally``, so this settles it."""


Reply = JsonReply | StreamReply
