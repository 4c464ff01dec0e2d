"""The step types every inhouse knows, plus those installed packages add."""

from __future__ import annotations

from inhouse.flows.builtin_steps import FEATURES, LABEL, PII_CHECK, PII_MASK, PII_RESTORE
from inhouse.flows.context import StepType
from inhouse.flows.step_registry import StepRegistry

BUILTIN_STEPS: tuple[StepType, ...] = (PII_MASK, PII_RESTORE, PII_CHECK, FEATURES, LABEL)


def default_registry() -> StepRegistry:
    return StepRegistry.with_plugins(BUILTIN_STEPS)
