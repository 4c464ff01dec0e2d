"""The ``refusal`` step: the refusal policy for should-refuse categories.

A ``terms`` step with action ``flag`` marks a category (``context.flags``) without
refusing on its own; a ``refusal`` step later in the flow answers every request flagged
with one of its categories by that category's refusal template. As a pre step it
refuses before the model is called; as a post step it also covers categories that a
``terms`` step found in the model's answer.

::

    pre:
      - type: terms
        options: {lexicon: finance.yaml}        # categories with action: flag
      - type: refusal
        options:
          categories: [investment_advice, insider]
          templates: {insider: "我无法提供内幕信息。/ I cannot share inside information."}
"""

from __future__ import annotations

from pydantic import Field

from inhouse.flows.context import Block, FlowContext, StepOptions, StepType
from inhouse.flows.terms import CategoryName

DEFAULT_TEMPLATE = "抱歉，这个问题我无法回答。/ Sorry, I cannot answer this question."


class RefusalOptions(StepOptions):
    categories: list[CategoryName] = Field(
        min_length=1, description="flagged categories that are answered with a refusal"
    )
    template: str = Field(DEFAULT_TEMPLATE, min_length=1, description="the refusal given")
    templates: dict[CategoryName, str] = Field(
        default_factory=dict, description="a category's own refusal, instead of template"
    )


class RefusalStep:
    name = "refusal"

    def __init__(self, options: RefusalOptions) -> None:
        self._categories = frozenset(options.categories)
        self._template = options.template
        self._templates = dict(options.templates)

    def run(self, context: FlowContext) -> None:
        category = next((flag for flag in context.flags if flag in self._categories), None)
        if category is None:
            return
        message = self._templates.get(category, self._template)
        context.blocked = Block(self.name, category, message)
        context.decision = "blocked"
        context.decision_details = {"category": category}


REFUSAL = StepType(
    "refusal",
    RefusalOptions,
    RefusalStep,
    description="answer requests flagged with should-refuse categories by a refusal template",
)
