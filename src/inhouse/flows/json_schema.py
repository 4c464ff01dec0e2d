"""JSON Schema validation whose regular expressions run on RE2.

A flow's schema is a tenant's input, and JSON Schema has regular expressions in it
(``pattern``, ``patternProperties``): on Python's backtracking ``re`` a pattern such as
``^(a+)+$`` takes exponential time on an answer of a few dozen characters. The validator
here matches them with ``safe_regex`` (linear time) instead. jsonschema also matches
``patternProperties`` inside ``unevaluatedProperties``, which cannot be redirected; a
schema that combines the two is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from jsonschema import Draft202012Validator, validators  # type: ignore[import-untyped]
from jsonschema.exceptions import ValidationError  # type: ignore[import-untyped]

from inhouse.flows.safe_regex import SafePattern, compile_pattern

Keyword = Iterator[ValidationError]


def _compile(pattern: str) -> SafePattern:
    return compile_pattern(pattern, where="schema pattern")


def _pattern(validator: Any, pattern: str, instance: Any, _schema: Any) -> Keyword:
    if validator.is_type(instance, "string") and _compile(pattern).search(instance) is None:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, pattern_properties: dict[str, Any], instance: Any, _schema: Any
) -> Keyword:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in pattern_properties.items():
        compiled = _compile(pattern)
        for key, value in instance.items():
            if compiled.search(key) is not None:
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional(instance: dict[str, Any], schema: dict[str, Any]) -> Iterator[str]:
    properties = schema.get("properties", {})
    patterns = [_compile(p) for p in schema.get("patternProperties", {})]
    for key in instance:
        if key not in properties and not any(p.search(key) is not None for p in patterns):
            yield key


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: dict[str, Any]
) -> Keyword:
    if not validator.is_type(instance, "object"):
        return
    extras = set(_additional(instance, schema))
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        listed = ", ".join(repr(extra) for extra in sorted(extras))
        yield ValidationError(f"additional properties are not allowed ({listed})")


SafeValidator = validators.extend(
    Draft202012Validator,
    {
        "pattern": _pattern,
        "patternProperties": _pattern_properties,
        "additionalProperties": _additional_properties,
    },
)
"""Draft 2020-12, with every regular expression matched on RE2."""


def check_patterns(schema: Any) -> None:
    """Compile every regular expression of a schema for RE2 (raising 400 for one RE2
    cannot run), and refuse ``unevaluatedProperties`` beside ``patternProperties``."""
    has_unevaluated = has_pattern_properties = False
    for node in _subschemas(schema):
        if isinstance(node.get("pattern"), str):
            _compile(node["pattern"])
        if isinstance(node.get("patternProperties"), dict):
            has_pattern_properties = True
            for pattern in node["patternProperties"]:
                _compile(pattern)
        has_unevaluated |= "unevaluatedProperties" in node
    if has_unevaluated and has_pattern_properties:
        raise ValueError(
            "unevaluatedProperties cannot be combined with patternProperties here: "
            "use additionalProperties"
        )


def _subschemas(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _subschemas(value)
    elif isinstance(node, list):
        for item in node:
            yield from _subschemas(item)
