"""Admission on the request path: the caller's quotas, a token estimate, a reservation.

The estimate is an upper bound, so that a reservation can never be exceeded: the
prompt counts at most one token per byte of the request body (byte-level BPE never
makes more) plus room for the chat template, and the completion at most
``max_tokens`` per choice. A caller with a token quota who sends no max_tokens gets
the engine's default (local) or ``gateway.default_max_tokens`` (remote, passed on).
Fields that remote engines read as an output length of their own (``n_predict``,
``max_new_tokens`` ...) are clamped to the request's ``max_tokens``, so that they
cannot lengthen an answer past its reservation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from inhouse.config import Settings
from inhouse.engine.client import GenerationCall
from inhouse.errors import InvalidRequestError
from inhouse.protocol.openai import ChatCompletionRequest, CompletionRequest, to_json_object
from inhouse.protocol.types import Priority, TokenUsage
from inhouse.tenancy.admission import Limiter, Ticket, subjects_of
from inhouse.tenancy.models import Principal
from inhouse.tenancy.quotas import Limits, LimitsCache, PriorityClass

log = logging.getLogger(__name__)

TEMPLATE_ALLOWANCE = 64
"""Tokens a chat template may add around the messages (role markers, a default system turn)."""
MEDIA_PART_ALLOWANCE = 4096
"""Tokens a non-text content part (an image, audio) is assumed to cost at most."""
LENGTH_FIELDS = ("n_predict", "max_new_tokens", "num_predict", "max_length", "min_tokens")
"""Output lengths that llama.cpp, TGI, Ollama and vLLM read besides ``max_tokens``."""

_PRIORITIES = {
    PriorityClass.HIGH: Priority.HIGH,
    PriorityClass.NORMAL: Priority.NORMAL,
    PriorityClass.LOW: Priority.LOW,
}

Reservation = Callable[[int], int]
"""The tokens to reserve for a request that is not one generation (a flow), given the
completion bound of one generation that sets no max_tokens."""


@dataclass(frozen=True, slots=True)
class Admitted:
    request: GenerationCall
    ticket: Ticket | None
    priority: Priority
    completion_bound: int | None = None
    """The max_tokens a generation without one must carry for its reservation to hold
    (None: the caller has no token quota)."""


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


def bound_length_fields(request: GenerationCall) -> GenerationCall:
    """Clamp engine-specific output lengths to ``max_tokens`` (when one is set); refuse
    one that is not a whole number, since it could not be bounded."""
    extra = request.model_extra
    limit = request.token_limit
    if not extra or limit is None:
        return request
    changes: dict[str, Any] = {}
    for name in LENGTH_FIELDS:
        if name in extra:
            changes[name] = _clamped(extra[name], limit, name)
    options = extra.get("options")
    if isinstance(options, dict) and "num_predict" in options:
        num_predict = _clamped(options["num_predict"], limit, "options.num_predict")
        changes["options"] = {**options, "num_predict": num_predict}
    return request.model_copy(update=changes) if changes else request


def _clamped(value: Any, limit: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequestError(f"{name}: expected a whole number of tokens", param=name)
    # Negative values mean "no limit" to llama.cpp and Ollama: bounded like any other.
    return limit if value < 0 else min(value, limit)


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
        self,
        principal: Principal,
        request: GenerationCall,
        *,
        is_local: bool,
        reservation: Reservation | None = None,
    ) -> Admitted:
        """Reserve for the request, or raise ``RateLimitError`` naming the limit.

        ``reservation``: what to reserve, when the request is not the generation itself.
        """
        limits = await self._limits.limits_for(principal)
        priority = _PRIORITIES[limits.priority]
        subjects = subjects_of(principal, limits)
        if not subjects:
            return Admitted(bound_length_fields(request), None, priority)
        default = self._local_max_tokens if is_local else self._remote_max_tokens
        if reservation is not None:
            estimate = reservation(default) if limits.limits_tokens else 0
        else:
            if limits.limits_tokens and request.token_limit is None and not is_local:
                request = request.model_copy(update={"max_tokens": self._injected(request, limits)})
            estimate = estimate_tokens(request, default) if limits.limits_tokens else 0
        ticket = await self._limiter.acquire(subjects, estimate)
        bound = default if limits.limits_tokens else None
        return Admitted(bound_length_fields(request), ticket, priority, bound)

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

    def settle(
        self, ticket: Ticket, status: int, usage: TokenUsage, *, generated: bool = True
    ) -> None:
        """Replace the reservation with what was used.

        Every prompt has at least one token, so an answer that reports none (an upstream
        that sends no usage) is charged its whole reservation rather than nothing. A
        request that generated nothing (a flow that blocked its input) costs nothing.
        """
        answered = status == 200 or usage.completion_tokens > 0
        unreported = generated and usage.prompt_tokens == 0 and answered
        if unreported:
            log.warning("no token usage reported for a metered request: charging its estimate")
        self._limiter.settle(ticket, ticket.estimate if unreported else usage.total_tokens)
