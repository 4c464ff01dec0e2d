"""What the request path hands back to HTTP: a whole JSON body or an SSE stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class JsonReply:
    body: bytes
    request_id: str


@dataclass(frozen=True, slots=True)
class StreamReply:
    events: AsyncIterator[bytes]
    request_id: str


Reply = JsonReply | StreamReply
