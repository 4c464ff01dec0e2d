"""Incremental detokenisation with stop strings: a pure helper of the decode loop.

Text is released as soon as it is certain: never half a UTF-8 character, never the
start of what may become a stop string.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

Decode = Callable[[Sequence[int]], str]
_REPLACEMENT_CHAR = "\ufffd"


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str
    stopped: bool


class StopStringStream:
    def __init__(self, decode: Decode, stop: Sequence[str]) -> None:
        self._decode = decode
        self._stop = tuple(s for s in stop if s)
        self._longest_stop = max((len(s) for s in self._stop), default=0)
        self._tokens: list[int] = []
        self._emitted = 0
        self._text = ""

    def add(self, token_id: int) -> TextDelta:
        self._tokens.append(token_id)
        self._text = self._decode(self._tokens)
        if self._text.endswith(_REPLACEMENT_CHAR):
            return TextDelta("", stopped=False)
        stop_at = self._find_stop()
        if stop_at is not None:
            return TextDelta(self._release(stop_at), stopped=True)
        return TextDelta(self._release(len(self._text) - self._held_back()), stopped=False)

    def finish(self) -> str:
        """The text still held back when generation ends without a stop string."""
        return self._release(len(self._text))

    def _find_stop(self) -> int | None:
        if not self._stop:
            return None
        window_start = max(0, self._emitted - self._longest_stop)
        found = [i for s in self._stop if (i := self._text.find(s, window_start)) >= 0]
        return min(found) if found else None

    def _held_back(self) -> int:
        """Length of the longest suffix of the text that begins some stop string."""
        for length in range(min(self._longest_stop - 1, len(self._text)), 0, -1):
            suffix = self._text[-length:]
            if any(s.startswith(suffix) for s in self._stop):
                return length
        return 0

    def _release(self, end: int) -> str:
        end = max(end, self._emitted)
        piece = self._text[self._emitted : end]
        self._emitted = end
        return piece
