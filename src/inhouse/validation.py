"""Pydantic's validation errors, said the way inhouse says them: ``where: what``."""

from __future__ import annotations

from pydantic import ValidationError


def first_problem(exc: ValidationError) -> tuple[str, str]:
    """The first error: where (a dotted path, ``""`` for the whole value) and what."""
    errors = exc.errors(include_url=False)
    if not errors:
        return "", str(exc)
    first = errors[0]
    return ".".join(str(part) for part in first["loc"]), str(first["msg"])
