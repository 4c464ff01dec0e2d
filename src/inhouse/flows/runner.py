"""Running a flow: pre steps → the messages for the model → (the caller generates) →
post steps. No I/O here: the gateway does the generation between the two halves, so
the steps' own cost is what ``bench/flows.py`` measures.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from inhouse.errors import InvalidRequestError
from inhouse.flows.context import Block, FlowContext, Stage, Step, StepTrace
from inhouse.flows.spec import FlowSpec
from inhouse.flows.step_registry import StepRegistry

log = logging.getLogger(__name__)


@dataclass(slots=True)
class FlowRun:
    """One request through one flow version."""

    context: FlowContext
    trace: list[StepTrace] = field(default_factory=list)
    messages: list[dict[str, str]] = field(default_factory=list)
    """What the model gets: the system prompt and the rendered template."""

    @property
    def blocked(self) -> bool:
        return self.context.blocked is not None


class CompiledFlow:
    """A flow version with its steps built once; ``start`` and ``finish`` per request."""

    def __init__(self, spec: FlowSpec, registry: StepRegistry, *, version: int = 0) -> None:
        self.spec = spec
        self.version = version
        self._pre = [
            registry.build(s.type, s.options, Stage.PRE, where=f"pre.{i}")
            for i, s in enumerate(spec.pre)
        ]
        self._post = [
            registry.build(s.type, s.options, Stage.POST, where=f"post.{i}")
            for i, s in enumerate(spec.post)
        ]
        self.max_model_calls = 1 + sum(
            1 for step in self._post if getattr(step, "may_ask_again", False)
        )
        """The answer, and one more call for each post step that may ask the model again
        (``context.regenerate``): what admission reserves for, and all a request gets."""

    def start(
        self, text: str, *, user: str | None = None, variables: Mapping[str, str] | None = None
    ) -> FlowRun:
        """Run the pre steps on the input; unless a step blocked, render the messages."""
        variables = dict(variables or {})
        missing = [name for name in self.spec.model.variables if name not in variables]
        if missing:
            raise InvalidRequestError(
                f"flow {self.spec.name!r} needs the variables {', '.join(missing)}",
                param="variables",
            )
        run = FlowRun(FlowContext(text=text, user=user))
        _run_steps(self._pre, run, Stage.PRE)
        for name in self.spec.model.variables:
            if run.blocked:
                break
            variables[name] = self._pre_process_variable(run, name, variables[name])
        if run.blocked:
            return run
        model = self.spec.model
        if model.system_prompt:
            run.messages.append({"role": "system", "content": model.system_prompt})
        content = model.template.format_map({**variables, "input": run.context.text})
        run.messages.append({"role": "user", "content": content})
        return run

    def _pre_process_variable(self, run: FlowRun, name: str, value: str) -> str:
        """A template variable goes through the same pre steps as the input (it reaches the
        model the same way): masked, checked for terms, refused alike. Its PII shares the
        request's placeholders; a block or a flag counts for the request."""
        main = run.context
        context = FlowContext(text=value, user=main.user, pii=main.pii)
        variable = FlowRun(context)
        _run_steps(self._pre, variable, Stage.PRE)
        run.trace += [replace(t, details={**t.details, "variable": name}) for t in variable.trace]
        main.flags += [flag for flag in context.flags if flag not in main.flags]
        main.blocked = context.blocked
        return context.text

    def finish(
        self, run: FlowRun, output: str, *, regenerate: Callable[[str], str] | None = None
    ) -> FlowRun:
        """Run the post steps on the model's output."""
        context = run.context
        context.text = output
        context.stage = Stage.POST
        context.regenerate = regenerate
        _run_steps(self._post, run, Stage.POST)
        return run


STEP_FAILED = "The request could not be processed: a processing step failed."


def _run_steps(steps: list[Step], run: FlowRun, stage: Stage) -> None:
    context = run.context
    for step in steps:
        started = time.perf_counter_ns()
        try:
            step.run(context)
        except Exception as exc:
            # The exception's text may quote the user's input: only its type is logged.
            log.error("flow step %s failed (%s); the request is refused", step.name,
                      type(exc).__name__)  # fmt: skip
            context.blocked = Block(step.name, "step_error", STEP_FAILED)
        elapsed = (time.perf_counter_ns() - started) / 1000
        decision = "blocked" if context.blocked is not None else context.decision
        run.trace.append(StepTrace(step.name, stage, elapsed, decision, context.decision_details))
        context.decision, context.decision_details = "pass", {}
        if context.blocked is not None:
            return
