"""Admission on the request path: the caller's quotas, a token estimate, a reservation.

The estimate is an upper bound, so that a reservation can never be exceeded: the
prompt counts at most one token per byte of the request body (byte-level BPE never
makes more) plus room for the chat template, and the completion at most
``max_tokens`` per choice. A caller with a token quota who sends no max_tokens gets
the engine's default (local) or ``gateway.default_max_tokens`` (remote, passed on).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import orjson

from inhouse.config import Settings
from inhouse.engine.base import Priority, TokenUsage
from inhouse.gateway.protocol import ChatCompletionRequest, CompletionRequest, to_json_object
from inhouse.registry.models import ModelEntry
from inhouse.tenancy.admission import Limiter, Ticket, subjects_of
from inhouse.tenancy.models import Principal
from inhouse.tenancy.quotas import Limits, LimitsCache, PriorityClass

log = logging.getLogger(__name__)

GenerationCall = ChatCompletionRequest | CompletionRequest

TEMPLATE_ALLOWANCE = 64
"""Tokens a chat template may add around the messages (role markers, a default system turn)."""
MEDIA_PART_ALLOWANCE = 4096
"""Tokens a non-text content part (an image, audio) is assumed to cost at most."""

_PRIORITIES = {
    PriorityClass.HIGH: Priority.HIGH,
    PriorityClass.NORMAL: Priority.NORMAL,
    PriorityClass.LOW: Priority.LOW,
}


@dataclass(frozen=True, slots=True)
class Admitted:
    request: GenerationCall
    ticket: Ticket | None
    priority: Priority


def prompt_bound(request: GenerationCall) -> int:
    """At most this many prompt tokens: body bytes, the template, and each media part."""
    media_parts = 0
    if isinstance(request, ChatCompletionRequest):
        for message in request.messages:
            if isinstance(message.content, list):
                media_parts += sum(1 for part in message.content if part.type != "text")
    body = len(orjson.dumps(to_json_object(request)))
    return body + TEMPLATE_ALLOWANCE + media_parts * MEDIA_PART_ALLOWANCE


def completion_count(request: GenerationCall) -> int:
    """How many completions the request asks for: n, best_of, one per prompt."""
    count = request.n
    if isinstance(request, CompletionRequest):
        prompts = request.prompt
        count *= len(prompts) if isinstance(prompts, list) and prompts else 1
        best_of = (request.model_extra or {}).get("best_of")
        if isinstance(best_of, int) and best_of > request.n:
            count = count // request.n * best_of
    return count


def estimate_tokens(request: GenerationCall, default_max_tokens: int) -> int:
    limit = request.token_limit or default_max_tokens
    return prompt_bound(request) + completion_count(request) * limit


class Admission:
    def __init__(self, limits: LimitsCache, limiter: Limiter, settings: Settings) -> None:
        self._limits = limits
        self._limiter = limiter
        self._local_max_tokens = settings.engine.default_max_tokens
        self._remote_max_tokens = settings.gateway.default_max_tokens

    @property
    def limiter(self) -> Limiter:
        return self._limiter

    async def admit(
        self, principal: Principal, request: GenerationCall, entry: ModelEntry
    ) -> Admitted:
        """Reserve for the request, or raise ``RateLimitError`` naming the limit."""
        limits = await self._limits.limits_for(principal)
        priority = _PRIORITIES[limits.priority]
        subjects = subjects_of(principal, limits)
        if not subjects:
            return Admitted(request, None, priority)
        if limits.limits_tokens and request.token_limit is None and not entry.is_local:
            request = request.model_copy(update={"max_tokens": self._injected(request, limits)})
        default = self._local_max_tokens if entry.is_local else self._remote_max_tokens
        estimate = estimate_tokens(request, default) if limits.limits_tokens else 0
        ticket = await self._limiter.acquire(subjects, estimate)
        return Admitted(request, ticket, priority)

    def _injected(self, request: GenerationCall, limits: Limits) -> int:
        """The max_tokens a remote request without one gets: the default, or less where
        the smallest token quota would otherwise refuse it outright."""
        smallest = limits.smallest_token_limit
        if smallest is None:
            return self._remote_max_tokens
        # The field itself lengthens the body: ',"max_tokens":' and up to ten digits.
        field_bytes = 24
        room = (smallest - prompt_bound(request) - field_bytes) // completion_count(request)
        return max(1, min(self._remote_max_tokens, room))

    def settle(self, ticket: Ticket, status: int, usage: TokenUsage) -> None:
        """Replace the reservation with what was used.

        Every prompt has at least one token, so an answer that reports none (an upstream
        that sends no usage) is charged its whole reservation rather than nothing.
        """
        unreported = usage.prompt_tokens == 0 and (status == 200 or usage.completion_tokens > 0)
        if unreported:
            log.warning("no token usage reported for a metered request: charging its estimate")
        self._limiter.settle(ticket, ticket.estimate if unreported else usage.total_tokens)
