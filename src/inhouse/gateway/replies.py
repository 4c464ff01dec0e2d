"""What the request path hands back to HTTP: a whole JSON body or an SSE stream."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class JsonReply:
    body: bytes
    request_id: str
    headers: Mapping[str, str] = field(default_factory=dict)
    """More response headers (the fleet's ``X-Inhouse-Node`` and route reason)."""


@dataclass(frozen=True, slots=True)
class StreamReply:
    events: AsyncGenerator[bytes, None]
    request_id: str
    on_close: Callable[[], None] | None = None
    """Called when the HTTP response ends, however it ends: a stream whose client left
    before its first event never runs its own ``finally``, so this settles it."""
    headers: Mapping[str, str] = field(default_factory=dict)


Reply = JsonReply | StreamReply
