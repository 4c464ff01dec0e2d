"""The one interface the gateway generates through, whatever answers: the in-process
engine (``engine.local_client``), a remote OpenAI-compatible upstream
(``engine.upstream_client``) or the fleet of nodes (``fleet.client``).

``generate`` takes the OpenAI request as the engine should see it and gives back a
whole answer or a stream of chunks, both in the OpenAI wire format with the usage
they consumed. Refusals (a full engine, an unknown model upstream, a node fleet with
no room) raise before anything is answered; the caller may then try elsewhere or
answer with the error.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from inhouse.engine.base import Share
from inhouse.errors import UpstreamError
from inhouse.protocol.hints import NO_HINTS, RouteHints
from inhouse.protocol.openai import ChatCompletionRequest, CompletionRequest
from inhouse.protocol.replies import Chunk, JsonObject
from inhouse.protocol.types import Priority, TokenUsage

GenerationCall = ChatCompletionRequest | CompletionRequest
"""An OpenAI generation request: a chat or a raw completion."""


@dataclass(frozen=True, slots=True)
class Caller:
    """Whose request it is, as far as shared capacity cares: the fair-share group and
    weight of the slots it takes, and, for the fleet, the tenant's own nodes and routing
    policy. ``None`` tenant: a caller that is not a tenant (a node answering its gateway)."""

    share: Share = field(default_factory=Share)
    tenant_id: str | None = None
    tenant_name: str = ""


@dataclass(frozen=True, slots=True)
class EngineRequest:
    body: GenerationCall
    """The request as the engine answers it; ``body.model`` is the name answers carry."""
    request_id: str
    priority: Priority = Priority.NORMAL
    caller: Caller = field(default_factory=Caller)
    hints: RouteHints = NO_HINTS


@dataclass(frozen=True, slots=True)
class Origin:
    """Who answered: for usage records, response headers and the audit entry."""

    model_version: str
    """The registry id of the model entry (or ``node:<id>`` for a fleet node)."""
    node: str
    """Where it ran: ``local``, or an upstream's host and port."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Response headers that say so (the fleet's ``X-Inhouse-Node`` and route reason)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole answer: the OpenAI response body and the tokens it used."""

    payload: JsonObject
    usage: TokenUsage
    origin: Origin

    def first_text(self) -> tuple[str, str]:
        """The first choice's text and finish reason; 502 when the body is not a chat
        completion with text content."""
        try:
            choice = self.payload["choices"][0]
            content = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise UpstreamError("the model answered in an unexpected shape") from None
        if not isinstance(content, str):
            raise UpstreamError("the model answered with content that is not text")
        return content, str(choice.get("finish_reason") or "stop")


@dataclass(slots=True)
class AnswerStream:
    """A streamed answer. Iterate ``chunks`` to the end, or close it early; either frees
    what the generation holds. ``release`` frees it too, also when ``chunks`` was never
    started (a client gone before the first event), and may be called any number of
    times."""

    chunks: AsyncGenerator[Chunk, None]
    release: Callable[[], None]
    origin: Origin


class EngineClient(Protocol):
    """Generates for one model (or, for the fleet, for every model its nodes serve)."""

    async def generate(self, request: EngineRequest) -> Answer | AnswerStream:
        """A whole answer, or a stream when ``request.body.stream``; raise before
        anything is answered when the engine refuses."""
        ...
