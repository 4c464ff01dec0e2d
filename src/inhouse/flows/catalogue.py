"""The step types every inhouse knows, plus those installed packages add."""

from __future__ import annotations

from inhouse.flows.builtin_steps import FEATURES, LABEL, PII_CHECK, PII_MASK, PII_RESTORE
from inhouse.flows.cleaning import CLEAN
from inhouse.flows.context import StepType
from inhouse.flows.formatting import JSON_FORMAT, MARKDOWN
from inhouse.flows.refusal import REFUSAL
from inhouse.flows.step_registry import StepRegistry
from inhouse.flows.term_filter import TERM_FILTER

BUILTIN_STEPS: tuple[StepType, ...] = (
    CLEAN,
    PII_MASK,
    TERM_FILTER,
    REFUSAL,
    FEATURES,
    PII_CHECK,
    PII_RESTORE,
    JSON_FORMAT,
    MARKDOWN,
    LABEL,
)


def default_registry() -> StepRegistry:
    return StepRegistry.with_plugins(BUILTIN_STEPS)
