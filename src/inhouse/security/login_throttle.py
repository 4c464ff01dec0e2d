"""Logins under attack: attempts per client address, the password hasher's own bounded
pool, and how many failed logins reach the audit chain.

Account lockout stops guessing one person's password; the per-address limit stops one
client from trying many names. Password checks (memory-hard, by design expensive) run on
their own few threads, never the pool other routes use, and a login that would have to
queue behind too many others is refused at once (429). Failed logins are audited up to
a rate per name and overall; what is held back is counted in the next entry that is
written, so a flood of failures neither fills the audit chain nor goes unrecorded.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from inhouse.errors import RateLimitError

T = TypeVar("T")

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


class PasswordPool:
    """A few threads for logins, and a short line in front of them; a login that finds
    the line full is refused with 429 instead of waiting (or taking another route's
    thread)."""

    def __init__(self, workers: int, queue: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="login")
        self._capacity = workers + queue
        self._busy = 0

    async def run(self, check: Callable[..., T], *args: object) -> T:
        if self._busy >= self._capacity:
            raise RateLimitError(
                "Too many logins are being checked right now: try again in a second.",
                retry_after_seconds=1.0,
                code="logins_busy",
            )
        self._busy += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, lambda: check(*args))
        finally:
            self._busy -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class FailureAudit:
    """Which failed logins get an audit entry: at most ``per_name`` a minute for one
    username and ``overall`` a minute in all. ``admit`` says whether to write this one,
    and how many were held back before it (to be named in it)."""

    def __init__(
        self, per_name: int, overall: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._per_name, self._overall = per_name, overall
        self._clock = clock
        self._window_start = clock()
        self._counts: dict[str, int] = {}
        self._total = 0
        self._held_back = 0
        self._lock = threading.Lock()

    def admit(self, name: str) -> tuple[bool, int]:
        with self._lock:
            now = self._clock()
            if now - self._window_start >= WINDOW_SECONDS:
                self._window_start, self._counts, self._total = now, {}, 0
            count = self._counts.get(name, 0)
            if count >= self._per_name or self._total >= self._overall:
                self._held_back += 1
                return False, 0
            if len(self._counts) < _MAX_CLIENTS:
                self._counts[name] = count + 1
            self._total += 1
            held_back, self._held_back = self._held_back, 0
            return True, held_back
