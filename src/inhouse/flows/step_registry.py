"""The step types a flow may name: the built-in ones and those of installed packages.

An enterprise adds its own step without forking: a package declares an entry point in
the ``inhouse.steps`` group whose object is a :class:`~inhouse.flows.context.StepType`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import Any

from pydantic import ValidationError

from inhouse.errors import InvalidRequestError
from inhouse.flows.context import Stage, Step, StepOptions, StepType
from inhouse.validation import first_problem

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "inhouse.steps"


class StepRegistry:
    def __init__(self, step_types: Iterable[StepType]) -> None:
        self._types: dict[str, StepType] = {}
        for step_type in step_types:
            self._types[step_type.name] = step_type

    @classmethod
    def with_plugins(cls, builtin: Iterable[StepType]) -> StepRegistry:
        registry = cls(builtin)
        for entry_point in entry_points(group=ENTRY_POINT_GROUP):
            try:
                step_type = entry_point.load()
            except Exception:
                log.exception("step plug-in %s could not be loaded; skipped", entry_point.name)
                continue
            if not isinstance(step_type, StepType):
                log.error("step plug-in %s is not a StepType; skipped", entry_point.name)
                continue
            registry._types.setdefault(step_type.name, step_type)
        return registry

    def types(self) -> list[StepType]:
        return [self._types[name] for name in sorted(self._types)]

    def options(
        self, type_name: str, raw: dict[str, Any], stage: Stage, *, where: str
    ) -> StepOptions:
        step_type = self._types.get(type_name)
        if step_type is None:
            known = ", ".join(sorted(self._types))
            raise InvalidRequestError(
                f"{where}: unknown step type {type_name!r}; known: {known}", param=where
            )
        if stage not in step_type.stages:
            raise InvalidRequestError(
                f"{where}: step {type_name!r} runs only in "
                f"{', '.join(sorted(s.value for s in step_type.stages))}",
                param=where,
            )
        try:
            return step_type.options.model_validate(raw)
        except ValidationError as exc:
            field, what = first_problem(exc)
            raise InvalidRequestError(
                f"{where}.options.{field}: {what}", param=f"{where}.options"
            ) from None

    def build(self, type_name: str, raw: dict[str, Any], stage: Stage, *, where: str) -> Step:
        options = self.options(type_name, raw, stage, where=where)
        return self._types[type_name].build(options)
