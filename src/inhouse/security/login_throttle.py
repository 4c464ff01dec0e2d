"""Login attempts per client address, in a sliding minute (per gateway replica).

Account lockout stops guessing one person's password; this stops one client from
trying many names, and from keeping the password hasher (memory-hard, by design
expensive) busy for everyone else.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from inhouse.errors import RateLimitError

WINDOW_SECONDS = 60.0
_MAX_CLIENTS = 100_000


class LoginThrottle:
    def __init__(
        self, attempts_per_minute: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limit = attempts_per_minute
        self._clock = clock
        self._attempts: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, client: str) -> None:
        """Count an attempt of ``client``; raise 429 if it is over the limit."""
        now = self._clock()
        with self._lock:
            if len(self._attempts) >= _MAX_CLIENTS:
                self._attempts.clear()
            recent = self._attempts.setdefault(client, deque())
            while recent and recent[0] <= now - WINDOW_SECONDS:
                recent.popleft()
            if len(recent) >= self._limit:
                wait = recent[0] + WINDOW_SECONDS - now
                raise RateLimitError(
                    f"Too many login attempts from this address: try again in {wait:.0f} s.",
                    retry_after_seconds=wait,
                    code="too_many_login_attempts",
                )
            recent.append(now)
