"""Request ids: unique across replicas and restarts without a random draw per request."""

from __future__ import annotations

import itertools
import secrets


class RequestIds:
    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count(1)

    def next(self, kind: str) -> str:
        """``kind``: ``chatcmpl`` or ``cmpl``, as OpenAI names its ids."""
        return f"{kind}-{self._prefix}{next(self._counter):012x}"
