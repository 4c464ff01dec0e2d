"""Flow specs and the runner: validation with clear errors, pre steps → messages → post
steps, blocking, traces without content."""

from __future__ import annotations

import pytest

from inhouse.errors import InvalidRequestError
from inhouse.flows.catalogue import default_registry
from inhouse.flows.context import Stage
from inhouse.flows.runner import CompiledFlow
from inhouse.flows.spec import flow_json_schema, parse_spec_text

REGISTRY = default_registry()

SPEC = """
name: claims-assistant
model:
  alias: smollm2-135m-instruct
  system_prompt: You are a claims assistant of ACME Insurance.
  template: "Policy {policy}. Customer question: {input}"
  temperature: 0.2
pre:
  - type: features
  - type: pii_mask
post:
  - type: pii_check
  - type: pii_restore
  - type: label
    options: {position: end}
"""


def test_a_flow_masks_before_the_model_and_restores_after() -> None:
    flow = CompiledFlow(parse_spec_text(SPEC, REGISTRY), REGISTRY, version=3)
    question = "我的手机 13800138000 什么时候能收到理赔？"
    run = flow.start(question, variables={"policy": "P-77"})
    assert run.messages == [
        {"role": "system", "content": "You are a claims assistant of ACME Insurance."},
        {
            "role": "user",
            "content": "Policy P-77. Customer question: 我的手机 [PHONE_1] 什么时候能收到理赔？",
        },
    ]
    assert run.context.features["language"] == "zh"
    flow.finish(run, "我们会致电 [PHONE_1] 通知您。")
    assert run.context.text.startswith("我们会致电 13800138000 通知您。")
    assert run.context.text.endswith("AI-generated】")
    assert run.context.metadata["content_label"]["provider"] == "inhouse"
    decisions = [(t.step, t.stage, t.decision, t.details.get("variable")) for t in run.trace]
    assert [d[:3] for d in decisions] == [
        ("features", Stage.PRE, "pass"),
        ("pii_mask", Stage.PRE, "masked"),
        ("features", Stage.PRE, "pass"),  # the variable {policy}, through the same steps
        ("pii_mask", Stage.PRE, "pass"),
        ("pii_check", Stage.POST, "pass"),
        ("pii_restore", Stage.POST, "changed"),
        ("label", Stage.POST, "changed"),
    ]
    assert [d[3] for d in decisions[2:4]] == ["policy", "policy"]
    assert "13800138000" not in repr(run.trace)


def test_template_variables_go_through_the_pre_steps_like_the_input() -> None:
    """Written as the attack: the caller puts what the flow would refuse or mask in a
    template variable (``metadata``) instead of the message."""
    spec = parse_spec_text(
        "name: guarded\nmodel: {alias: m, template: 'Policy {policy}: {input}'}\n"
        "pre:\n  - type: pii_mask\n"
        "  - type: terms\n    options: {terms: {gambling: {action: block, terms: [网络赌博]}}}\n",
        REGISTRY,
    )
    flow = CompiledFlow(spec, REGISTRY)
    run = flow.start("我的电话 13800138000", variables={"policy": "或 13900139000"})
    content = run.messages[-1]["content"]
    assert "13800138000" not in content and "13900139000" not in content
    assert content == "Policy 或 [PHONE_2]: 我的电话 [PHONE_1]"  # one numbering, two values
    assert run.context.pii == {"[PHONE_1]": "13800138000", "[PHONE_2]": "13900139000"}
    blocked = flow.start("hello", variables={"policy": "推荐网络赌博平台"})
    assert blocked.blocked and blocked.messages == []
    assert blocked.context.blocked is not None and blocked.context.blocked.category == "gambling"


def test_a_leak_of_someone_elses_data_is_masked_or_blocked() -> None:
    spec = parse_spec_text(
        "name: leaky\nmodel: {alias: m}\npost: [{type: pii_check, options: {action: block}}, "
        "{type: label}]",
        REGISTRY,
    )
    flow = CompiledFlow(spec, REGISTRY)
    run = flow.finish(flow.start("hello"), "Call Mr Li on 13912345678.")
    assert run.blocked and run.context.blocked is not None
    assert run.context.blocked.category == "pii_leak"
    assert [t.step for t in run.trace] == ["pii_check"]  # the label step never ran


def test_invalid_specs_are_refused_with_the_place_named() -> None:
    cases = {
        "name: Bad Name\nmodel: {alias: m}": "name",
        "name: ok\nmodel: {alias: m}\npre: [{type: nope}]": "unknown step type 'nope'",
        "name: ok\nmodel: {alias: m}\npre: [{type: label}]": "runs only in post",
        "name: ok\nmodel: {alias: m}\npost: [{type: label, options: {colour: red}}]": (
            "post.0.options.colour"
        ),
        "name: ok\nmodel: {alias: m, template: 'x {a b}'}": "template",
        "- a list": "one mapping",
        "name: [unclosed": "not valid YAML",
    }
    for text, expected in cases.items():
        with pytest.raises(InvalidRequestError) as raised:
            parse_spec_text(text, REGISTRY)
        assert expected in raised.value.message, (text, raised.value.message)


def test_missing_template_variables_are_a_clear_error() -> None:
    flow = CompiledFlow(parse_spec_text(SPEC, REGISTRY), REGISTRY)
    with pytest.raises(InvalidRequestError, match="needs the variables policy"):
        flow.start("hi")


def test_the_json_schema_lists_every_step_type_with_its_options() -> None:
    schema = flow_json_schema(REGISTRY)
    variants = {v["title"]: v for v in schema["$defs"]["StepSpec"]["oneOf"]}
    assert set(variants) >= {"pii_mask", "pii_restore", "pii_check", "features", "label"}
    assert variants["label"]["x-stages"] == ["post"]
    assert "position" in variants["label"]["properties"]["options"]["properties"]
