"""The caller's say in routing: ``X-Inhouse-Tier`` and ``X-Inhouse-Priority``, and the
hints a flow adds (its tier, its routing policy, what its ``features`` step found)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from inhouse.errors import InvalidRequestError
from inhouse.protocol.types import Priority, Tier

TIER_HEADER = "x-inhouse-tier"
PRIORITY_HEADER = "x-inhouse-priority"


@dataclass(frozen=True, slots=True)
class RouteHints:
    """What the caller or a flow says about a request's routing."""

    tier: Tier | None = None
    tasks: frozenset[str] = frozenset()
    language: str | None = None
    policy: Mapping[str, Any] = field(default_factory=dict)
    """A flow's overrides of the tenant's routing policy."""
    priority: Priority | None = None
    """``X-Inhouse-Priority``: a caller may lower its tenant's priority, never raise it."""


NO_HINTS = RouteHints()


def parse_tier_hint(value: str | None) -> Tier | None:
    """The ``X-Inhouse-Tier`` header: ``edge`` or ``center``, or absent."""
    if value is None:
        return None
    try:
        return Tier(value.strip().lower())
    except ValueError:
        raise InvalidRequestError(
            "X-Inhouse-Tier: use edge or center", param="X-Inhouse-Tier"
        ) from None


def parse_priority_hint(value: str | None) -> Priority | None:
    """The ``X-Inhouse-Priority`` header: ``high``, ``normal`` or ``low``, or absent."""
    if value is None:
        return None
    try:
        return Priority[value.strip().upper()]
    except KeyError:
        raise InvalidRequestError(
            "X-Inhouse-Priority: use high, normal or low", param="X-Inhouse-Priority"
        ) from None


def route_hints(headers: Mapping[str, str]) -> RouteHints:
    """The hint headers of a request (``headers`` looks names up in lower case)."""
    tier = headers.get(TIER_HEADER)
    priority = headers.get(PRIORITY_HEADER)
    if tier is None and priority is None:
        return NO_HINTS
    return RouteHints(tier=parse_tier_hint(tier), priority=parse_priority_hint(priority))
