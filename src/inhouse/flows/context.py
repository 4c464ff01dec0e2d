"""What flow steps work on, and what every step is.

A flow runs its *pre* steps on the user's input, then the model, then its *post* steps
on the model's output. Every step gets the same :class:`FlowContext`: the text of its
stage, and what earlier steps left for later ones (the PII placeholders, features for
the router, content labels, a block). A step changes the context in place and returns
nothing; a step that refuses the request sets ``context.blocked`` and the runner stops.

Steps are configured by a pydantic options model and built once per flow version, so
running one is plain function calls. Custom steps come from the ``inhouse.steps``
entry-point group: a :class:`StepType` object.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict


class Stage(StrEnum):
    PRE = "pre"
    POST = "post"


@dataclass(frozen=True, slots=True)
class Block:
    """Why a step refused the request, and what the caller is told instead."""

    step: str
    category: str
    """The risk category or rule that decided (never the matched content itself)."""
    message: str
    """The answer given in place of a generation (a refusal template)."""


@dataclass(frozen=True, slots=True)
class StepTrace:
    """One step's timing and decision, for metrics and ``X-Inhouse-Trace``: no content."""

    step: str
    stage: Stage
    micros: float
    decision: str = "pass"
    """``pass``, ``changed``, ``masked``, ``flagged``, ``blocked`` ..."""
    details: dict[str, Any] = field(default_factory=dict)
    """Counts and categories only, never the text."""


@dataclass(slots=True)
class FlowContext:
    text: str
    """The input in pre steps; the model's output in post steps."""
    stage: Stage = Stage.PRE
    user: str | None = None
    """The end user, when the caller says (``user`` field): violation counters use it."""
    pii: dict[str, str] = field(default_factory=dict)
    """Placeholder → original, from masking; a post step may restore them."""
    features: dict[str, Any] = field(default_factory=dict)
    """Extracted for the router and the trace: language, length, task keywords."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Returned with the response: content labels (provider, content id) ..."""
    flags: list[str] = field(default_factory=list)
    """Categories that steps flagged without blocking."""
    blocked: Block | None = None
    regenerate: Callable[[str], str] | None = None
    """In post steps: ask the model again with an extra instruction (one repair)."""
    decision: str = "pass"
    """What the running step decided; the runner records it in the trace and resets it."""
    decision_details: dict[str, Any] = field(default_factory=dict)


class Step(Protocol):
    """A configured step: ``run`` changes the context in place. A post step that may call
    ``context.regenerate`` says so with a true ``may_ask_again`` attribute; each such
    step gets one more model call per request, and no step gets more."""

    name: str

    def run(self, context: FlowContext) -> None: ...


class StepOptions(BaseModel):
    """Base of every step's options: unknown options are an error, not ignored."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True, slots=True)
class StepType:
    """A kind of step that flow specs name (``type: pii_mask``)."""

    name: str
    options: type[StepOptions]
    build: Callable[[Any], Step]
    """Options (an instance of ``options``) → a step ready to run."""
    stages: frozenset[Stage] = frozenset(Stage)
    description: str = ""
