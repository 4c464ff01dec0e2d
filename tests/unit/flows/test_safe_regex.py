"""A tenant's regular expressions cannot stall a worker: written as the attack, a pattern
with catastrophic backtracking on Python's ``re`` and an input made to trigger it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from inhouse.errors import InvalidRequestError
from inhouse.flows.catalogue import default_registry
from inhouse.flows.context import FlowContext, Stage
from inhouse.flows.pii import mask
from inhouse.flows.safe_regex import compile_pattern

EVIL = r"^(a+)+$"
"""Exponential on a backtracking engine: each extra 'a' doubles the work."""
BAIT = "a" * 60 + "!"


def finishes(work: Callable[[], Any], seconds: float = 10.0) -> Any:
    """The result of ``work``, which must end: on ``re`` it would not in a lifetime."""
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(work()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "the pattern is still running: it backtracks"
    return result[0]


def test_a_custom_pii_pattern_cannot_backtrack_forever() -> None:
    masked = finishes(lambda: mask(BAIT * 50, custom={"evil": EVIL}))
    assert masked.findings == ()
    assert mask("EMP-123456", custom={"emp": r"EMP-\d{6}"}).text == "[EMP_1]"


def test_a_json_schema_pattern_cannot_backtrack_forever() -> None:
    step = default_registry().build(
        "json",
        {"schema": {"type": "object", "properties": {"id": {"type": "string", "pattern": EVIL}}},
         "repair": False},
        Stage.POST,
        where="post.0",
    )  # fmt: skip
    context = FlowContext(text='{"id": "' + BAIT + '"}', stage=Stage.POST)
    finishes(lambda: step.run(context))
    assert context.blocked is not None and context.blocked.category == "format"


def test_pattern_properties_and_additional_properties_match_on_re2() -> None:
    schema = {
        "type": "object",
        "patternProperties": {EVIL: {"type": "integer"}},
        "additionalProperties": False,
    }
    step = default_registry().build(
        "json", {"schema": schema, "repair": False}, Stage.POST, where="post.0"
    )
    context = FlowContext(text='{"' + BAIT + '": 1}', stage=Stage.POST)
    finishes(lambda: step.run(context))
    assert context.blocked is not None  # the key matches no pattern: not allowed
    context = FlowContext(text='{"aaa": 1}', stage=Stage.POST)
    step.run(context)
    assert context.blocked is None


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [(r"(a)\1", "backreferences"), (r"a(?=b)", "lookahead"), ("(", "missing")],
)
def test_patterns_re2_cannot_run_are_refused_when_the_flow_is_validated(
    pattern: str, reason: str
) -> None:
    with pytest.raises(InvalidRequestError, match=reason):
        compile_pattern(pattern)
    registry = default_registry()
    with pytest.raises(InvalidRequestError, match="custom"):
        registry.options("pii_mask", {"custom": {"x": pattern}}, Stage.PRE, where="pre.0")
    schema = {"type": "string", "pattern": pattern}
    with pytest.raises(InvalidRequestError, match="pattern"):
        registry.options("json", {"schema": schema}, Stage.POST, where="post.0")


def test_unevaluated_properties_beside_pattern_properties_is_refused() -> None:
    schema = {"type": "object", "patternProperties": {"^x": {}}, "unevaluatedProperties": False}
    with pytest.raises(InvalidRequestError, match="unevaluatedProperties"):
        default_registry().options("json", {"schema": schema}, Stage.POST, where="post.0")


def test_an_overlong_pattern_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="at most"):
        compile_pattern("a" * 5000)
