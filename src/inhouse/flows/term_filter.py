"""The ``terms`` flow step: blocks, masks or flags what a tenant's lexicon lists
(matching rules in ``inhouse.flows.terms``)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping

from pydantic import Field, model_validator

from inhouse.flows.context import Block, FlowContext, StepOptions, StepType
from inhouse.flows.terms import (
    CategoryName,
    CategorySpec,
    Lexicon,
    LexiconFile,
    LexiconSpec,
    TermAction,
    TermMatch,
)

DEFAULT_REFUSAL = (
    "抱歉，该请求包含不允许的内容，无法处理。/ "
    "Sorry, this request contains content that cannot be processed."
)


def mask_matches(text: str, matches: Iterable[TermMatch], mask_with: str = "*") -> str:
    """``text`` with each match's span overwritten by ``mask_with``, once per character."""
    parts: list[str] = []
    done = 0
    for match in matches:
        parts += (text[done : match.start], mask_with * (match.end - match.start))
        done = match.end
    parts.append(text[done:])
    return "".join(parts)


# --- the step --------------------------------------------------------------------------


class TermFilterOptions(StepOptions):
    lexicon: str | None = Field(None, description="a YAML lexicon file, reloaded on change")
    terms: dict[CategoryName, CategorySpec] | None = Field(
        None, min_length=1, description="or inline categories: name → {action, terms}"
    )
    reload_seconds: float = Field(5.0, ge=0, description="how often to look at the file")
    refusal: str = Field(DEFAULT_REFUSAL, min_length=1, description="the answer to a block")
    mask_with: str = Field("*", min_length=1, max_length=1, description="masks each character")

    @model_validator(mode="after")
    def _one_source(self) -> TermFilterOptions:
        if (self.lexicon is None) == (self.terms is None):
            raise ValueError("give either lexicon (a file) or terms (inline categories)")
        return self


def _inline_version(categories: Mapping[str, CategorySpec]) -> str:
    canonical = json.dumps(
        {name: spec.model_dump(mode="json") for name, spec in categories.items()},
        ensure_ascii=False,
        sort_keys=True,
    )
    return "inline-" + hashlib.sha256(canonical.encode()).hexdigest()[:12]


class TermFilterStep:
    """Blocks, masks or flags what the lexicon lists; details carry categories only."""

    name = "terms"

    def __init__(
        self, options: TermFilterOptions, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._source: Lexicon | LexiconFile
        if options.lexicon is not None:
            self._source = LexiconFile(
                options.lexicon, reload_seconds=options.reload_seconds, clock=clock
            )
        else:
            categories = options.terms or {}
            spec = LexiconSpec(version=_inline_version(categories), categories=categories)
            self._source = Lexicon(spec)
        self._refusal = options.refusal
        self._mask_with = options.mask_with

    def run(self, context: FlowContext) -> None:
        source = self._source
        lexicon = source.current() if isinstance(source, LexiconFile) else source
        matches = lexicon.find(context.text)
        context.decision_details = {
            "categories": sorted({match.category for match in matches}),
            "matches": len(matches),
            "lexicon_version": lexicon.version,
        }
        if not matches:
            context.decision = "pass"
            return
        for match in matches:
            if match.action is TermAction.FLAG and match.category not in context.flags:
                context.flags.append(match.category)
        blocking = next((m for m in matches if m.action is TermAction.BLOCK), None)
        if blocking is not None:
            context.blocked = Block(self.name, blocking.category, self._refusal)
            context.decision = "blocked"
            return
        masked = [match for match in matches if match.action is TermAction.MASK]
        if masked:
            context.text = mask_matches(context.text, masked, self._mask_with)
            context.decision = "masked"
        else:
            context.decision = "flagged"


TERM_FILTER = StepType(
    name="terms",
    options=TermFilterOptions,
    build=TermFilterStep,
    description="block, mask or flag the terms of a lexicon (hot-reloaded YAML or inline)",
)
