"""A flow as a tenant writes it (YAML or JSON), validated, and its JSON schema.

::

    name: claims-assistant
    description: Answers questions about insurance claims
    model:
      alias: smollm2-135m-instruct
      system_prompt: You are a claims assistant of ACME Insurance.
      template: "Customer question: {input}"
      temperature: 0.2
      max_tokens: 256
    pre:
      - type: clean
      - type: pii_mask
      - type: terms
        options: {lexicon: /etc/inhouse/lexicons/finance.yaml}
    post:
      - type: pii_check
      - type: label

Every step's options are validated by its step type when the spec is validated, so a
stored flow always builds.
"""

from __future__ import annotations

import re
import string
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from inhouse.errors import InvalidRequestError
from inhouse.fleet.router import RoutingPolicy
from inhouse.flows.context import Stage, StepOptions
from inhouse.flows.step_registry import StepRegistry
from inhouse.validation import first_problem

FLOW_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MAX_STEPS = 32


class StepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="a step type: clean, pii_mask, terms, label, ...")
    options: dict[str, Any] = Field(default_factory=dict)


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alias: str = Field(min_length=1, max_length=128, description="the model that generates")
    system_prompt: str | None = Field(default=None, max_length=32_000)
    template: str = Field(
        default="{input}",
        max_length=32_000,
        description="the user message; {input} is the pre-processed input, other {names} "
        "come from the caller's variables",
    )
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1, le=2**31 - 1)
    tier: Literal["edge", "center"] | None = Field(
        default=None, description="send the flow's requests to this tier of the fleet"
    )
    routing: dict[str, Any] = Field(
        default_factory=dict,
        description="overrides of the tenant's routing policy for this flow's requests "
        "(edge_max_prompt_tokens, center_tasks, ...; see docs/fleet.md)",
    )

    @field_validator("routing")
    @classmethod
    def _routing(cls, routing: dict[str, Any]) -> dict[str, Any]:
        try:
            RoutingPolicy().merged(routing)
        except InvalidRequestError as exc:
            raise ValueError(exc.message) from None
        return routing

    @field_validator("alias")
    @classmethod
    def _not_a_flow(cls, alias: str) -> str:
        if alias.startswith("flow:"):
            raise ValueError("a flow's model is a model, not another flow")
        return alias

    @field_validator("template")
    @classmethod
    def _template_names(cls, template: str) -> str:
        try:
            fields = [f for f in string.Formatter().parse(template) if f[1] is not None]
        except ValueError as exc:
            raise ValueError(f"template: {exc}") from None
        for _, name, spec, conversion in fields:
            # Plain {name} only: a format spec ({input:>999999999}) or a conversion could
            # allocate without bound or fail on the request.
            if not (name and name.isidentifier()) or spec or conversion:
                raise ValueError("template: use plain {names} (letters, digits, '_')")
        return template

    @property
    def variables(self) -> list[str]:
        names = [name for _, name, _, _ in string.Formatter().parse(self.template) if name]
        return sorted(set(names) - {"input"})


class FlowSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="lowercase letters, digits, '-' and '_'; called as flow:NAME")
    description: str = Field(default="", max_length=2000)
    model: ModelSpec
    pre: list[StepSpec] = Field(default_factory=list, max_length=MAX_STEPS)
    post: list[StepSpec] = Field(default_factory=list, max_length=MAX_STEPS)

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not FLOW_NAME.match(name):
            raise ValueError("use 1-64 lowercase letters, digits, '-' or '_'")
        return name


def validate_spec(data: dict[str, Any], registry: StepRegistry) -> FlowSpec:
    """A spec whose every step exists, fits its stage and has valid options."""
    try:
        spec = FlowSpec.model_validate(data)
    except ValidationError as exc:
        where, what = first_problem(exc)
        raise InvalidRequestError(f"{where}: {what}", param=where or None) from None
    for stage, steps in ((Stage.PRE, spec.pre), (Stage.POST, spec.post)):
        for index, step in enumerate(steps):
            registry.options(step.type, step.options, stage, where=f"{stage.value}.{index}")
    return spec


def parse_spec_text(text: str, registry: StepRegistry) -> FlowSpec:
    """YAML or JSON (JSON is YAML) → a validated spec."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidRequestError(f"the flow file is not valid YAML or JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("a flow file holds one mapping: name, model, pre, post")
    return validate_spec(data, registry)


def flow_json_schema(registry: StepRegistry) -> dict[str, Any]:
    """The schema of a flow spec with each step type's options, for form editors."""
    schema = FlowSpec.model_json_schema()
    variants = []
    for step_type in registry.types():
        options: type[StepOptions] = step_type.options
        variants.append(
            {
                "type": "object",
                "title": step_type.name,
                "description": step_type.description,
                "properties": {
                    "type": {"const": step_type.name},
                    "options": options.model_json_schema(),
                },
                "required": ["type"],
                "additionalProperties": False,
                "x-stages": sorted(stage.value for stage in step_type.stages),
            }
        )
    schema["$defs"]["StepSpec"] = {"oneOf": variants}
    return schema
