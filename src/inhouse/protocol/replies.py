"""What a request path hands back to HTTP (a whole JSON body or an SSE stream), and the
chunks a stream is made of."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from inhouse.protocol.types import TokenUsage

JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Chunk:
    """One OpenAI stream chunk (``chat.completion.chunk`` or ``text_completion``) and the
    usage of the whole stream so far, when known: what a client that leaves now pays."""

    payload: JsonObject
    usage: TokenUsage | None = None


@dataclass(frozen=True, slots=True)
class JsonReply:
    body: bytes
    request_id: str
    headers: Mapping[str, str] = field(default_factory=dict)
    """More response headers (the fleet's ``X-Inhouse-Node`` and route reason)."""
    payload: JsonObject | None = None
    """``body`` before it was serialised, for callers in this process."""


@dataclass(frozen=True, slots=True)
class StreamReply:
    events: AsyncGenerator[bytes, None]
    request_id: str
    on_close: Callable[[], None] | None = None
    """Called when the HTTP response ends, however it ends: a stream whose client left
    before its first event never runs its own ``finally``, so this settles it."""
    headers: Mapping[str, str] = field(default_factory=dict)


Reply = JsonReply | StreamReply
