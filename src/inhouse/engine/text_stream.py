"""Incremental detokenisation with stop strings: a pure helper of the decode loop.

Text is released as soon as it is certain: never half a UTF-8 character, never the
start of what may become a stop string. Each token costs the same however long the
output already is: only a window of the last tokens is decoded again (as vLLM does:
the text of ``tokens[prefix:read]`` is known, ``tokens[prefix:]`` gives what is new),
and stop strings, at most ``MAX_STOP_LENGTH`` characters each, are looked for only in
the text that is not yet released and the stop's length before it.
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
        self._prefix = 0
        """Tokens before this one are never decoded again."""
        self._read = 0
        """``tokens[prefix:read]`` is text already appended."""
        self._emitted = 0
        self._text = ""

    def add(self, token_id: int) -> TextDelta:
        self._tokens.append(token_id)
        if not self._extend():
            return TextDelta("", stopped=False)
        stop_at = self._find_stop()
        if stop_at is not None:
            return TextDelta(self._release(stop_at), stopped=True)
        return TextDelta(self._release(len(self._text) - self._held_back()), stopped=False)

    def finish(self) -> str:
        """The text still held back when generation ends without a stop string."""
        if self._read < len(self._tokens):
            self._extend(final=True)
        return self._release(len(self._text))

    def _extend(self, *, final: bool = False) -> bool:
        """Append the text of the tokens not yet appended; False while the newest token
        ends inside a character (or adds nothing), unless this is the end."""
        known = self._decode(self._tokens[self._prefix : self._read]) if self._read else ""
        current = self._decode(self._tokens[self._prefix :])
        complete = len(current) > len(known) and not current.endswith(_REPLACEMENT_CHAR)
        if not (complete or final):
            return False
        self._text += current[len(known) :]
        self._prefix, self._read = self._read, len(self._tokens)
        return True

    def _find_stop(self) -> int | None:
        if not self._stop:
            return None
        window_start = max(0, self._emitted - self._longest_stop)
        found = [i for s in self._stop if (i := self._text.find(s, window_start)) >= 0]
        return min(found) if found else None

    def _held_back(self) -> int:
        """Length of the longest suffix of the unreleased text that begins a stop string."""
        pending = len(self._text) - self._emitted
        for length in range(min(self._longest_stop - 1, pending), 0, -1):
            suffix = self._text[-length:]
            if any(s.startswith(suffix) for s in self._stop):
                return length
        return 0

    def _release(self, end: int) -> str:
        end = max(end, self._emitted)
        piece = self._text[self._emitted : end]
        self._emitted = end
        return piece
