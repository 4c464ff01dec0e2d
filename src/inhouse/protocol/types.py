"""The small values the wire format carries and everything behind it shares: a request's
priority class (``X-Inhouse-Priority``), a fleet tier (``X-Inhouse-Tier``) and token
usage (``usage`` of every answer)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum


class Priority(IntEnum):
    """Lower value is served first."""

    HIGH = 0
    NORMAL = 1
    LOW = 2


class Tier(StrEnum):
    EDGE = "edge"
    """Small models (under ~10B parameters) close to the users: cheap, fast, limited."""
    CENTER = "center"
    """Large models in the data center: for long, deep or demanding requests."""

    @property
    def other(self) -> Tier:
        return Tier.CENTER if self is Tier.EDGE else Tier.EDGE


@dataclass(frozen=True, slots=True)
class TokenUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens
