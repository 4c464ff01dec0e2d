"""Built-in steps around PII, features and content labels.

- ``pii_mask`` (pre): personal data → reversible placeholders (``inhouse.flows.pii``);
- ``pii_restore`` (post): the originals back into the answer, where the flow allows;
- ``pii_check`` (post): personal data in the answer that the user did not send is
  masked (or the answer blocked);
- ``features`` (pre): language, length and task keywords, for the router and the trace;
- ``label`` (post): the visible "AI-generated" notice and the metadata label (provider,
  content id) that China's generative-AI rules ask for.
"""

from __future__ import annotations

import re
import uuid
from typing import Literal

from pydantic import Field, field_validator

from inhouse.errors import InvalidRequestError
from inhouse.fleet.router import DEFAULT_TASKS
from inhouse.flows.context import Block, FlowContext, Stage, StepOptions, StepType
from inhouse.flows.pii import PiiKind, mask, restore
from inhouse.flows.safe_regex import compile_pattern

_PRE = frozenset({Stage.PRE})
_POST = frozenset({Stage.POST})


class PiiMaskOptions(StepOptions):
    kinds: list[PiiKind] | None = Field(
        default=None, description="what to look for; default: every kind"
    )
    custom: dict[str, str] = Field(
        default_factory=dict,
        max_length=32,
        description="more patterns: name → regular expression (RE2 syntax: linear time, "
        "no backreferences or lookaround)",
    )

    @field_validator("custom")
    @classmethod
    def _patterns_run_on_re2(cls, custom: dict[str, str]) -> dict[str, str]:
        for name, pattern in custom.items():
            try:
                compile_pattern(pattern, where=f"custom.{name}")
            except InvalidRequestError as exc:
                raise ValueError(exc.message) from None
        return custom


class PiiMaskStep:
    name = "pii_mask"

    def __init__(self, options: PiiMaskOptions) -> None:
        self._kinds = set(options.kinds) if options.kinds is not None else None
        self._custom = {
            name: compile_pattern(pattern, where=f"custom.{name}")
            for name, pattern in options.custom.items()
        }

    def run(self, context: FlowContext) -> None:
        masked = mask(context.text, kinds=self._kinds, custom=self._custom, taken=context.pii)
        if not masked.findings:
            return
        context.text = masked.text
        context.pii.update(masked.mapping)
        context.decision = "masked"
        kinds = sorted({finding.kind for finding in masked.findings})
        context.decision_details = {"kinds": kinds, "count": len(masked.findings)}


class PiiRestoreOptions(StepOptions):
    pass


class PiiRestoreStep:
    """Put the user's own data back into the answer: only for flows whose output goes
    back to that user, never where it is stored or shown to others."""

    name = "pii_restore"

    def run(self, context: FlowContext) -> None:
        if not context.pii:
            return
        restored = restore(context.text, context.pii)
        if restored != context.text:
            context.text = restored
            context.decision = "changed"


class PiiCheckOptions(StepOptions):
    action: Literal["mask", "block"] = "mask"
    refusal: str = (
        "抱歉，回答中包含个人信息，无法提供。/ Sorry, the answer contained personal data."
    )


class PiiCheckStep:
    """Personal data in the answer that the user did not send (a model that leaks)."""

    name = "pii_check"

    def __init__(self, options: PiiCheckOptions) -> None:
        self._options = options

    def run(self, context: FlowContext) -> None:
        masked = mask(context.text)
        own = set(context.pii.values())
        leaked = [f for f in masked.findings if f.value not in own]
        if not leaked:
            return
        kinds = sorted({finding.kind for finding in leaked})
        context.decision_details = {"kinds": kinds, "count": len(leaked)}
        if self._options.action == "block":
            context.blocked = Block(self.name, "pii_leak", self._options.refusal)
            context.decision = "blocked"
            return
        for finding in sorted(leaked, key=lambda f: f.start, reverse=True):
            placeholder = f"[{finding.kind.upper()}]"
            context.text = context.text[: finding.start] + placeholder + context.text[finding.end :]
        context.decision = "masked"


_HAN = re.compile(r"[\u4e00-\u9fff\u3400-\u4dbf]")
_LATIN = re.compile(r"[A-Za-z]")


class FeaturesOptions(StepOptions):
    tasks: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_TASKS.items()},
        description="task name → keywords (case-insensitive) that suggest it",
    )


class FeaturesStep:
    """Language (by script), length, and task keywords, for the router and the trace."""

    name = "features"

    def __init__(self, options: FeaturesOptions) -> None:
        self._tasks = {task: [w.casefold() for w in words] for task, words in options.tasks.items()}

    def run(self, context: FlowContext) -> None:
        text = context.text
        han = len(_HAN.findall(text))
        latin = len(_LATIN.findall(text))
        language = "zh" if han and han * 3 >= latin else ("en" if latin else "other")
        folded = text.casefold()
        tasks = sorted(
            task for task, words in self._tasks.items() if any(w in folded for w in words)
        )
        context.features.update({"language": language, "length": len(text), "tasks": tasks})
        context.decision_details = {"language": language, "tasks": tasks}


class LabelOptions(StepOptions):
    visible: bool = Field(
        default=True,
        description="add the visible notice to the answer (tenant-admins only may turn it off)",
    )
    notice: str = "【本内容由人工智能生成 / AI-generated】"
    position: Literal["start", "end"] = "end"
    provider: str = "inhouse"


class LabelStep:
    name = "label"

    def __init__(self, options: LabelOptions) -> None:
        self._options = options

    def run(self, context: FlowContext) -> None:
        options = self._options
        context.metadata["content_label"] = {
            "ai_generated": True,
            "provider": options.provider,
            "content_id": str(uuid.uuid4()),
        }
        if options.visible:
            separator = "\n\n"
            if options.position == "end":
                context.text = f"{context.text}{separator}{options.notice}"
            else:
                context.text = f"{options.notice}{separator}{context.text}"
            context.decision = "changed"


PII_MASK = StepType(
    "pii_mask", PiiMaskOptions, PiiMaskStep, _PRE, "personal data → reversible placeholders"
)
PII_RESTORE = StepType(
    "pii_restore",
    PiiRestoreOptions,
    lambda _options: PiiRestoreStep(),
    _POST,
    "the user's own data back into the answer",
)
PII_CHECK = StepType(
    "pii_check", PiiCheckOptions, PiiCheckStep, _POST, "personal data leaking into the answer"
)
FEATURES = StepType(
    "features", FeaturesOptions, FeaturesStep, _PRE, "language, length, task keywords"
)
LABEL = StepType("label", LabelOptions, LabelStep, _POST, "AI-generated notice and metadata")
