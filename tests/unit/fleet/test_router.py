"""The complexity router: every rule, its order, its reason, and policy overrides."""

from __future__ import annotations

from typing import Any

import pytest

from inhouse.errors import InvalidRequestError
from inhouse.fleet.router import RequestProfile, RouteDecision, RoutingPolicy, route
from inhouse.protocol.types import Priority, Tier

POLICY = RoutingPolicy()


def profile(**fields: Any) -> RequestProfile:
    values: dict[str, Any] = {
        "model": "assistant",
        "prompt_tokens": 200,
        "turns": 2,
        "max_tokens": 256,
    }
    values.update(fields)
    return RequestProfile(**values)


def decide(policy: RoutingPolicy = POLICY, **fields: Any) -> RouteDecision:
    return route(profile(**fields), policy)


def test_a_small_request_takes_the_default_tier() -> None:
    assert decide() == RouteDecision(Tier.EDGE, "default=edge")
    center_first = POLICY.merged({"default_tier": "center"})
    assert decide(center_first) == RouteDecision(Tier.CENTER, "default=center")


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"prompt_tokens": 2400}, "prompt_tokens=2400>1500"),
        ({"turns": 12}, "turns=12>8"),
        ({"max_tokens": 2048}, "max_tokens=2048>512"),
        # the first limit exceeded is named, in the order prompt, turns, new tokens
        ({"prompt_tokens": 1501, "turns": 9, "max_tokens": 513}, "prompt_tokens=1501>1500"),
        ({"turns": 9, "max_tokens": 513}, "turns=9>8"),
    ],
)
def test_a_request_over_an_edge_limit_goes_to_the_center(
    fields: dict[str, Any], reason: str
) -> None:
    assert decide(**fields) == RouteDecision(Tier.CENTER, reason)


def test_limits_are_inclusive() -> None:
    assert decide(prompt_tokens=1500, turns=8, max_tokens=512).tier is Tier.EDGE


def test_center_tasks_go_to_the_center_and_name_the_first_task() -> None:
    assert decide(tasks=frozenset({"code"})) == RouteDecision(Tier.CENTER, "task=code")
    both = decide(tasks=frozenset({"code", "analysis"}))
    assert both == RouteDecision(Tier.CENTER, "task=analysis")
    # a center task wins over an edge task
    mixed = decide(tasks=frozenset({"translate", "code"}))
    assert mixed == RouteDecision(Tier.CENTER, "task=code")


def test_an_edge_task_stays_at_the_edge_within_the_slack() -> None:
    translate = frozenset({"translate"})
    assert decide(tasks=translate) == RouteDecision(Tier.EDGE, "edge_task=translate")
    borderline = decide(tasks=translate, prompt_tokens=3000, max_tokens=1024)
    assert borderline == RouteDecision(Tier.EDGE, "edge_task=translate")
    too_long = decide(tasks=translate, prompt_tokens=3001)
    assert too_long == RouteDecision(Tier.CENTER, "prompt_tokens=3001>1500")
    # every exceeded limit must be within the slack, not only the first
    one_too_far = decide(tasks=translate, prompt_tokens=2000, max_tokens=1025)
    assert one_too_far == RouteDecision(Tier.CENTER, "prompt_tokens=2000>1500")


def test_an_edge_task_overrides_a_center_default_tier() -> None:
    center_first = POLICY.merged({"default_tier": "center"})
    decision = decide(center_first, tasks=frozenset({"translate"}))
    assert decision == RouteDecision(Tier.EDGE, "edge_task=translate")


def test_no_slack_makes_edge_tasks_obey_the_limits() -> None:
    strict = POLICY.merged({"edge_task_slack": 1.0})
    decision = decide(strict, tasks=frozenset({"translate"}), prompt_tokens=1501)
    assert decision.tier is Tier.CENTER


def test_a_hint_wins_over_every_other_rule_unless_hints_are_ignored() -> None:
    heavy = {"tasks": frozenset({"code"}), "prompt_tokens": 9000, "priority": Priority.HIGH}
    with_tier = POLICY.merged({"high_priority_tier": "center"})
    assert decide(with_tier, tier_hint=Tier.EDGE, **heavy) == RouteDecision(Tier.EDGE, "hint=edge")
    assert decide(tier_hint=Tier.CENTER) == RouteDecision(Tier.CENTER, "hint=center")
    deaf = POLICY.merged({"honor_hints": False})
    assert decide(deaf, tier_hint=Tier.CENTER) == RouteDecision(Tier.EDGE, "default=edge")


def test_high_priority_requests_go_to_their_tier_when_one_is_set() -> None:
    critical_at_edge = POLICY.merged({"high_priority_tier": "edge"})
    decision = decide(critical_at_edge, priority=Priority.HIGH, tasks=frozenset({"code"}))
    assert decision == RouteDecision(Tier.EDGE, "priority=high")
    # other priorities, and policies without the field, follow the other rules
    assert decide(critical_at_edge, tasks=frozenset({"code"})).reason == "task=code"
    assert decide(priority=Priority.HIGH, tasks=frozenset({"code"})).reason == "task=code"


def test_a_language_the_edge_does_not_handle_goes_to_the_center() -> None:
    english_edge = POLICY.merged({"edge_languages": ["en"]})
    assert decide(english_edge, language="zh") == RouteDecision(Tier.CENTER, "language=zh")
    assert decide(english_edge, language="en").tier is Tier.EDGE
    assert decide(english_edge).tier is Tier.EDGE  # language unknown
    assert decide(language="zh").tier is Tier.EDGE  # no restriction by default


def test_reasons_are_ascii_header_values() -> None:
    english_edge = POLICY.merged({"edge_languages": ["en"], "center_tasks": ["代码"]})
    for decision in (
        decide(english_edge, language="中文"),
        decide(english_edge, tasks=frozenset({"代码"})),
        decide(english_edge, language="x" * 100),
    ):
        assert decision.tier is Tier.CENTER
        assert decision.reason.isascii()
        assert len(decision.reason) <= 64
        assert "," not in decision.reason and "\n" not in decision.reason


def test_merged_applies_overrides_and_keeps_the_rest() -> None:
    base = RoutingPolicy(edge_max_turns=4)
    tenant = base.merged({"edge_max_prompt_tokens": 800, "center_tasks": ["code"]})
    assert tenant.edge_max_prompt_tokens == 800
    assert tenant.edge_max_turns == 4
    assert tenant.center_tasks == frozenset({"code"})
    flow = tenant.merged({"edge_tasks": [], "high_priority_tier": "center"})
    assert flow.edge_tasks == frozenset()
    assert flow.high_priority_tier is Tier.CENTER
    assert flow.edge_max_prompt_tokens == 800
    assert base.edge_max_prompt_tokens == 1500  # the base is untouched
    assert base.merged({}) == base


@pytest.mark.parametrize(
    ("overrides", "param"),
    [
        ({"edge_max_tokens": 100}, "edge_max_tokens"),  # unknown field
        ({"edge_max_prompt_tokens": 0}, "edge_max_prompt_tokens"),
        ({"edge_max_turns": "many"}, "edge_max_turns"),
        ({"default_tier": "cloud"}, "default_tier"),
        ({"edge_task_slack": 0.5}, "edge_task_slack"),
        ({"honor_hints": "perhaps"}, "honor_hints"),
    ],
)
def test_merged_refuses_invalid_overrides(overrides: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        POLICY.merged(overrides)
    assert caught.value.param == param
    assert param in caught.value.message


def test_a_policy_is_frozen() -> None:
    with pytest.raises(ValueError, match="frozen"):
        POLICY.edge_max_turns = 3  # type: ignore[misc]
