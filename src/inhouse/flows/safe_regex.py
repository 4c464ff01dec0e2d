"""Regular expressions that tenants write (custom PII patterns, JSON Schema ``pattern``
and ``patternProperties``), compiled for RE2: matching takes time linear in the text,
whatever the pattern, so no pattern can stall a worker with catastrophic backtracking.

RE2 has no backreferences and no lookaround; a pattern that needs them is refused when
the flow is validated, with the reason, rather than run on a backtracking engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Any, Protocol

import re2

from inhouse.errors import InvalidRequestError

MAX_PATTERN_LENGTH = 1000
"""Characters of one pattern."""
MAX_PROGRAM_SIZE = 10_000
"""RE2's measure of a compiled pattern's size; bounds its memory and the cost per byte."""

_OPTIONS = re2.Options()
_OPTIONS.max_mem = 8 << 20  # bytes of automaton one pattern may build
_OPTIONS.log_errors = False


class Match(Protocol):
    def start(self, group: int = 0) -> int: ...

    def end(self, group: int = 0) -> int: ...

    def group(self, group: int = 0) -> str: ...


class SafePattern(Protocol):
    """What callers use of a compiled pattern (a subset of ``re.Pattern``)."""

    pattern: str

    def search(self, text: str, pos: int = 0) -> Match | None: ...

    def finditer(self, text: str, pos: int = 0) -> Iterator[Match]: ...


def compile_pattern(pattern: str, *, where: str = "pattern") -> SafePattern:
    """Compile a tenant's pattern for RE2, or raise 400 naming ``where`` and why."""
    return _compiled(pattern, where)


@lru_cache(maxsize=4096)
def _compiled(pattern: str, where: str) -> SafePattern:
    if not isinstance(pattern, str):
        raise InvalidRequestError(f"{where}: a pattern is a string", param=where)
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise InvalidRequestError(
            f"{where}: a pattern may have at most {MAX_PATTERN_LENGTH} characters", param=where
        )
    try:
        compiled: Any = re2.compile(pattern, options=_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "invalid"
        reason = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        raise InvalidRequestError(
            f"{where}: {reason}; patterns run on RE2 (linear time): no backreferences "
            "and no lookahead or lookbehind",
            param=where,
        ) from None
    if compiled.programsize > MAX_PROGRAM_SIZE:
        raise InvalidRequestError(
            f"{where}: the pattern is too complex (RE2 program size {compiled.programsize}, "
            f"at most {MAX_PROGRAM_SIZE})",
            param=where,
        )
    pattern_object: SafePattern = compiled
    return pattern_object
