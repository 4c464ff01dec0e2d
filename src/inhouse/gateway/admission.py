"""Admission on the request path: the caller's quotas, a token estimate, a reservation.

The estimate is an upper bound, so that a reservation can never be exceeded: the
prompt counts at most one token per byte of the request body (byte-level BPE never
makes more) plus room for the chat template, and the completion at most
``max_tokens`` per choice. A caller with a token quota who sends no max_tokens gets
the engine's default (local) or ``gateway.default_max_tokens`` (remote, passed on).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from inhouse.config import Settings
from inhouse.engine.base import Priority
from inhouse.gateway.protocol import ChatCompletionRequest, CompletionRequest, to_json_object
from inhouse.registry.models import ModelEntry
from inhouse.tenancy.admission import Limiter, Ticket, subjects_of
from inhouse.tenancy.models import Principal
from inhouse.tenancy.quotas import LimitsCache, PriorityClass

GenerationCall = ChatCompletionRequest | CompletionRequest

TEMPLATE_ALLOWANCE = 64
"""Tokens a chat template may add around the messages (role markers, a default system turn)."""

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


def estimate_tokens(request: GenerationCall, default_max_tokens: int) -> int:
    body = to_json_object(request)
    prompt_bound = len(orjson.dumps(body)) + TEMPLATE_ALLOWANCE
    prompts = request.prompt if isinstance(request, CompletionRequest) else None
    completions = request.n * (len(prompts) if isinstance(prompts, list) and prompts else 1)
    return prompt_bound + completions * (request.token_limit or default_max_tokens)


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
            request = request.model_copy(update={"max_tokens": self._remote_max_tokens})
        default = self._local_max_tokens if entry.is_local else self._remote_max_tokens
        estimate = estimate_tokens(request, default) if limits.limits_tokens else 0
        ticket = await self._limiter.acquire(subjects, estimate)
        return Admitted(request, ticket, priority)

    def settle(self, ticket: Ticket, tokens: int) -> None:
        self._limiter.settle(ticket, tokens)
