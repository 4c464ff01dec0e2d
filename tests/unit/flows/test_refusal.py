"""The refusal policy: flagged should-refuse categories answered with a template."""

from __future__ import annotations

import pytest

from inhouse.errors import InvalidRequestError
from inhouse.flows.catalogue import default_registry
from inhouse.flows.refusal import DEFAULT_TEMPLATE
from inhouse.flows.runner import CompiledFlow
from inhouse.flows.spec import validate_spec

TERMS = {
    "type": "terms",
    "options": {
        "terms": {
            "insider": {"action": "flag", "terms": ["内幕消息", "insider tip"]},
            "advice": {"action": "flag", "terms": ["稳赚", "guaranteed return"]},
            "slang": {"action": "flag", "terms": ["moon"]},
        }
    },
}
REFUSAL = {
    "type": "refusal",
    "options": {
        "categories": ["insider", "advice"],
        "templates": {"insider": "我无法提供内幕信息。"},
    },
}


def flow(pre: list[dict[str, object]], post: list[dict[str, object]]) -> CompiledFlow:
    data = {"name": "broker", "model": {"alias": "m"}, "pre": pre, "post": post}
    return CompiledFlow(validate_spec(data, default_registry()), default_registry())


def test_a_flagged_should_refuse_input_gets_its_template_before_the_model() -> None:
    compiled = flow([TERMS, REFUSAL], [])
    run = compiled.start("请告诉我 内 幕 消 息，哪只股票明天涨")  # broken by spaces
    assert run.context.blocked is not None
    assert run.context.blocked.category == "insider"
    assert run.context.blocked.message == "我无法提供内幕信息。"
    assert run.messages == []  # the model is not asked
    assert [t.decision for t in run.trace] == ["flagged", "blocked"]


def test_categories_without_their_own_template_get_the_default() -> None:
    run = flow([TERMS, REFUSAL], []).start("Is a GUARANTEED RETURN of 20% realistic?")
    assert run.context.blocked is not None
    assert (run.context.blocked.category, run.context.blocked.message) == (
        "advice",
        DEFAULT_TEMPLATE,
    )


def test_flags_outside_the_policy_and_clean_inputs_pass() -> None:
    compiled = flow([TERMS, REFUSAL], [])
    for text in ("to the moon!", "How do index funds work?"):
        run = compiled.start(text)
        assert run.context.blocked is None
        assert run.messages[-1]["content"] == text


def test_as_a_post_step_it_refuses_answers_that_raise_a_category() -> None:
    compiled = flow([], [TERMS, REFUSAL])
    run = compiled.start("Which stock should I buy?")
    assert run.context.blocked is None
    compiled.finish(run, "Buy ACME: an insider tip says it doubles.")
    assert run.context.blocked is not None and run.context.blocked.step == "refusal"
    assert run.context.blocked.message == "我无法提供内幕信息。"
    harmless = compiled.start("Which stock should I buy?")
    compiled.finish(harmless, "I cannot give personal investment advice.")
    assert harmless.context.blocked is None


def test_a_policy_needs_categories() -> None:
    with pytest.raises(InvalidRequestError, match="categories"):
        flow([{"type": "refusal", "options": {"categories": []}}], [])
