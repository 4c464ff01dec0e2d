"""The complexity router: which tier (edge or center) should answer a request.

Pure and deterministic: a ``RequestProfile`` (what the gateway estimated of the request)
and a ``RoutingPolicy`` (what the operator wrote, per tenant or per flow) give a
``RouteDecision``. The scheduler (``fleet/scheduler.py``) then picks a node of that tier,
and may still fall back to the other tier when this one is full.

The rules, first match wins:

1. **hint** — ``policy.honor_hints`` and the request carries ``tier_hint``: that tier
   (``hint=center``).
2. **priority** — a high-priority request and ``policy.high_priority_tier`` is set: that
   tier (``priority=high``).
3. **center task** — a task keyword in ``policy.center_tasks``: center (``task=code``; the
   alphabetically first such task is named).
4. **language** — ``policy.edge_languages`` is set and the request's language is known and
   not in it: center (``language=zh``).
5. **size** — the first limit exceeded, in the order prompt tokens, turns, new tokens:
   center (``prompt_tokens=2400>1500``) — unless the request has a task in
   ``policy.edge_tasks`` and every exceeded value is within ``edge_task_slack`` times its
   limit: edge (``edge_task=translate``).
6. **edge task** — a task in ``policy.edge_tasks``: edge (``edge_task=translate``), even
   where ``default_tier`` is center.
7. **default** — ``policy.default_tier`` (``default=edge``).

Reasons are short ASCII strings, safe for the ``X-Inhouse-Route-Reason`` header.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inhouse.errors import InvalidRequestError
from inhouse.protocol.types import Priority, Tier
from inhouse.validation import first_problem

DEFAULT_TASKS: dict[str, list[str]] = {
    "translate": ["translate", "翻译", "译成"],
    "summarize": ["summarize", "summary", "总结", "摘要", "概括"],
    "code": ["code", "python", "sql", "函数", "代码", "编程"],
    "analysis": ["analyze", "analyse", "compare", "分析", "比较", "评估"],
}
"""Task name → keywords that suggest it: the router's task rules and the flows' ``features``
step read the same words."""


@dataclass(frozen=True, slots=True)
class RequestProfile:
    """What the gateway knows of a request before it is generated."""

    model: str
    prompt_tokens: int
    """An estimate of the prompt's length in tokens (chat template included)."""
    turns: int
    """Messages in the conversation."""
    max_tokens: int
    """New tokens the caller allows (the gateway's default when the caller sets none)."""
    tasks: frozenset[str] = frozenset()
    """Task keywords found in the request: ``code``, ``analysis``, ``summarize`` ..."""
    language: str | None = None
    """The prompt's language (``en``, ``zh`` ...), when detected."""
    tier_hint: Tier | None = None
    """An explicit tier asked for by the caller or by the flow."""
    priority: Priority = Priority.NORMAL


class RoutingPolicy(BaseModel):
    """How requests are split between tiers; written by operators per tenant or per flow."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    edge_max_prompt_tokens: int = Field(
        default=1500,
        ge=1,
        description="Prompts longer than this (estimated tokens) go to the center: small "
        "models lose track of long contexts, and edge nodes have less KV-cache memory.",
    )
    edge_max_turns: int = Field(
        default=8,
        ge=1,
        description="Conversations with more messages than this go to the center.",
    )
    edge_max_new_tokens: int = Field(
        default=512,
        ge=1,
        description="Requests allowing more new tokens than this (max_tokens) go to the "
        "center: long generations are where small models drift.",
    )
    center_tasks: frozenset[str] = Field(
        default=frozenset({"code", "analysis"}),
        description="Task keywords that always go to the center, whatever the size.",
    )
    edge_tasks: frozenset[str] = Field(
        default=frozenset({"translate"}),
        description="Task keywords that stay at the edge even when a size limit is "
        "exceeded by up to edge_task_slack times. Translation is the default: its length "
        "follows the input rather than the difficulty, and small specialised models do it "
        "well, so the size limits misjudge it. A center task wins over an edge task.",
    )
    edge_task_slack: float = Field(
        default=2.0,
        ge=1.0,
        description="How far (a factor of each limit) an edge task may exceed the size "
        "limits and still stay at the edge; 1.0 gives edge tasks no slack.",
    )
    edge_languages: frozenset[str] | None = Field(
        default=None,
        description="Languages the edge models handle; a request in another (detected) "
        "language goes to the center. None: no restriction.",
    )
    honor_hints: bool = Field(
        default=True,
        description="Follow a tier hint given by the caller or the flow.",
    )
    high_priority_tier: Tier | None = Field(
        default=None,
        description="Send every high-priority request to this tier; None: route them by "
        "the same rules as the others.",
    )
    default_tier: Tier = Field(
        default=Tier.EDGE,
        description="The tier of a request no rule decides: one that fits every edge limit.",
    )

    def merged(self, overrides: Mapping[str, Any]) -> RoutingPolicy:
        """This policy with ``overrides`` (a tenant's or a flow's) applied and validated.

        Raises ``InvalidRequestError`` naming the first field that is unknown or invalid.
        """
        try:
            return type(self).model_validate({**self.model_dump(), **overrides})
        except ValidationError as exc:
            where, what = first_problem(exc)
            raise InvalidRequestError(
                f"routing policy: {where}: {what}", param=where or None
            ) from None


@dataclass(frozen=True, slots=True)
class RouteDecision:
    tier: Tier
    reason: str
    """ASCII, for the ``X-Inhouse-Route-Reason`` header: ``task=code``, ``default=edge`` ..."""


def route(profile: RequestProfile, policy: RoutingPolicy) -> RouteDecision:
    """The tier for ``profile`` under ``policy``, by the rules in this module's docstring."""
    if policy.honor_hints and profile.tier_hint is not None:
        return RouteDecision(profile.tier_hint, f"hint={profile.tier_hint.value}")
    if profile.priority == Priority.HIGH and policy.high_priority_tier is not None:
        return RouteDecision(policy.high_priority_tier, "priority=high")
    center_tasks = profile.tasks & policy.center_tasks
    if center_tasks:
        return RouteDecision(Tier.CENTER, f"task={_ascii(min(center_tasks))}")
    if (
        policy.edge_languages is not None
        and profile.language is not None
        and profile.language not in policy.edge_languages
    ):
        return RouteDecision(Tier.CENTER, f"language={_ascii(profile.language)}")
    edge_tasks = profile.tasks & policy.edge_tasks
    exceeded = [
        (name, value, limit)
        for name, value, limit in (
            ("prompt_tokens", profile.prompt_tokens, policy.edge_max_prompt_tokens),
            ("turns", profile.turns, policy.edge_max_turns),
            ("max_tokens", profile.max_tokens, policy.edge_max_new_tokens),
        )
        if value > limit
    ]
    if exceeded:
        within_slack = all(value <= limit * policy.edge_task_slack for _, value, limit in exceeded)
        if not (edge_tasks and within_slack):
            name, value, limit = exceeded[0]
            return RouteDecision(Tier.CENTER, f"{name}={value}>{limit}")
    if edge_tasks:
        return RouteDecision(Tier.EDGE, f"edge_task={_ascii(min(edge_tasks))}")
    return RouteDecision(policy.default_tier, f"default={policy.default_tier.value}")


def _ascii(text: str) -> str:
    """``text`` as header-safe ASCII: anything else becomes ``?``, at most 32 characters."""
    safe = "".join(c if " " < c < "\x7f" and c not in ",;" else "?" for c in text)
    return safe[:32]
