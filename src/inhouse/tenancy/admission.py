"""Admission: reserve a request's tokens and a concurrency slot before it runs, settle after.

A request reserves an upper bound of its tokens (prompt bound + max_tokens) against
every window of every limit of its tenant and key, atomically: it is admitted only if
all of them still fit, so concurrent requests can never overshoot a budget. When it
ends, the real count replaces the estimate; a request that fails releases what it did
not use. Counters live in this process (``LocalLimiter``) or in Redis, shared by all
gateway replicas (``inhouse.tenancy.redis_limiter``).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from inhouse.errors import InvalidRequestError, RateLimitError
from inhouse.tenancy.models import Principal
from inhouse.tenancy.quotas import TOKEN_LIMITS, Limits, Quota

# Checked in this order; the first that does not fit names the refusal.
LIMIT_NAMES = (
    "concurrency",
    "requests_per_minute",
    "tokens_per_minute",
    "tokens_per_day",
    "tokens_per_month",
)
_UNITS = {
    "concurrency": "concurrent requests",
    "requests_per_minute": "requests a minute",
    "tokens_per_minute": "tokens a minute",
    "tokens_per_day": "tokens a day (UTC)",
    "tokens_per_month": "tokens a month (UTC)",
}


@dataclass(frozen=True, slots=True)
class Subject:
    """One party whose limits apply: a tenant or a key."""

    id: str
    label: str
    quota: Quota

    def limit(self, name: str) -> int | None:
        value: int | None = getattr(self.quota, name)
        return value


def subjects_of(principal: Principal, limits: Limits) -> tuple[Subject, ...]:
    """Whose counters a request counts against: its tenant, its key, and each key its key
    was made with (so that minting keys never multiplies a key's limits)."""
    candidates = (
        Subject(f"t:{principal.tenant_id}", f"tenant '{principal.tenant_name}'", limits.tenant),
        Subject(f"k:{principal.key_id}", f"key {principal.key_id}", limits.key),
        *(
            Subject(f"k:{maker}", f"key {maker} (which made this key)", quota)
            for maker, quota in limits.makers
        ),
    )
    return tuple(s for s in candidates if any(s.limit(n) is not None for n in LIMIT_NAMES))


@dataclass(frozen=True, slots=True)
class Windows:
    """The fixed windows (UTC) a moment falls in, and when each ends (epoch seconds)."""

    minute: str
    day: str
    month: str
    minute_ends: float
    day_ends: float
    month_ends: float

    @classmethod
    def at(cls, now: datetime) -> Windows:
        minute_start = now.replace(second=0, microsecond=0)
        day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        month_start = day_start.replace(day=1)
        next_month = (month_start + timedelta(days=32)).replace(day=1)
        return cls(
            minute=minute_start.strftime("%Y%m%d%H%M"),
            day=day_start.strftime("%Y%m%d"),
            month=month_start.strftime("%Y%m"),
            minute_ends=(minute_start + timedelta(minutes=1)).timestamp(),
            day_ends=(day_start + timedelta(days=1)).timestamp(),
            month_ends=next_month.timestamp(),
        )

    def window_of(self, limit_name: str) -> str:
        if limit_name.endswith("_minute"):
            return self.minute
        if limit_name.endswith("_day"):
            return self.day
        return self.month

    def retry_after(self, limit_name: str, now: float) -> float:
        """Seconds until the window of ``limit_name`` ends (1 for concurrency)."""
        if limit_name == "concurrency":
            return 1.0
        if limit_name.endswith("_minute"):
            return self.minute_ends - now
        if limit_name.endswith("_day"):
            return self.day_ends - now
        return self.month_ends - now


class WindowClock:
    """The current windows, worked out once a minute rather than on every request."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._windows: Windows | None = None

    def now(self) -> tuple[Windows, float]:
        now = self._clock()
        windows = self._windows
        if windows is None or not windows.minute_ends - 60.0 <= now < windows.minute_ends:
            windows = self._windows = Windows.at(datetime.fromtimestamp(now, UTC))
        return windows, now


@dataclass(frozen=True, slots=True)
class Ticket:
    """What one admitted request holds until it settles."""

    id: str
    subjects: tuple[Subject, ...]
    estimate: int
    windows: Windows
    enforced: bool = True


def new_ticket(subjects: Sequence[Subject], estimate: int, windows: Windows) -> Ticket:
    return Ticket(uuid.uuid4().hex, tuple(subjects), estimate, windows)


def refuse_impossible(subjects: Sequence[Subject], estimate: int) -> None:
    """Raise 400 for a request that no window could ever admit: waiting would not help."""
    for subject in subjects:
        for name in TOKEN_LIMITS:
            limit = subject.limit(name)
            if limit is not None and estimate > limit:
                raise InvalidRequestError(
                    f"this request may use up to {estimate} tokens, more than {subject.label}'s "
                    f"{name} quota of {limit} allows at all; send a smaller max_tokens",
                    param="max_tokens",
                    code="exceeds_quota",
                )


def refusal(
    subject: Subject, limit_name: str, used: int, needed: int, windows: Windows, now: float
) -> RateLimitError:
    limit = subject.limit(limit_name)
    unit = _UNITS[limit_name]
    if limit_name in ("concurrency", "requests_per_minute"):
        detail = f"{used} in use" if limit_name == "concurrency" else f"{used} made"
    else:
        detail = f"{used} used or reserved, this request needs up to {needed}"
    return RateLimitError(
        f"{subject.label} is over its {limit_name} quota: {limit} {unit}, {detail}",
        retry_after_seconds=max(1, math.ceil(windows.retry_after(limit_name, now))),
        code=f"{limit_name}_exceeded",
    )


class Limiter(Protocol):
    """Counters of admitted requests; ``LocalLimiter`` or ``RedisLimiter``."""

    async def acquire(self, subjects: Sequence[Subject], estimate: int) -> Ticket:
        """Reserve, or raise ``RateLimitError`` naming the first limit that does not fit."""
        ...

    def settle(self, ticket: Ticket, actual_tokens: int) -> None:
        """Replace the estimate with the real count and free the concurrency slot."""
        ...

    @property
    def fails_closed(self) -> bool:
        """Whether an unreachable counter store refuses requests (else admits them)."""
        ...

    @property
    def forgets_on_restart(self) -> bool:
        """Whether the counters live in this process (and must be seeded at start-up)."""
        ...

    def seed(self, used: Mapping[str, Mapping[str, int]]) -> None:
        """Count what was used in the current windows before this process started."""
        ...

    async def reachable(self) -> bool: ...

    async def close(self) -> None: ...


class LocalLimiter:
    """Counters in this process: exact for one gateway replica.

    Everything runs on the event loop without awaiting, so each acquire is atomic.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._windows = WindowClock(clock)
        self._in_flight: dict[str, int] = {}
        # (subject, counter name) -> (window id, value); a new window starts from zero.
        self._counters: dict[tuple[str, str], tuple[str, int]] = {}

    def _value(self, subject: str, name: str, window: str) -> int:
        current = self._counters.get((subject, name))
        return current[1] if current is not None and current[0] == window else 0

    def _add(self, subject: str, name: str, window: str, amount: int) -> None:
        current = self._counters.get((subject, name))
        if current is not None and current[0] != window:
            if current[0] > window:
                return  # settling into a window that has already ended
            current = None
        self._counters[(subject, name)] = (window, (current[1] if current else 0) + amount)

    async def acquire(self, subjects: Sequence[Subject], estimate: int) -> Ticket:
        refuse_impossible(subjects, estimate)
        windows, now = self._windows.now()
        for subject in subjects:
            for name in LIMIT_NAMES:
                limit = subject.limit(name)
                if limit is None:
                    continue
                if name == "concurrency":
                    used, needed = self._in_flight.get(subject.id, 0), 1
                elif name == "requests_per_minute":
                    used, needed = self._value(subject.id, name, windows.minute), 1
                else:
                    used, needed = self._value(subject.id, name, windows.window_of(name)), estimate
                if used + needed > limit:
                    raise refusal(subject, name, used, needed, windows, now)
        for subject in subjects:
            self._in_flight[subject.id] = self._in_flight.get(subject.id, 0) + 1
            self._add(subject.id, "requests_per_minute", windows.minute, 1)
            for name in TOKEN_LIMITS:
                self._add(subject.id, name, windows.window_of(name), estimate)
        return new_ticket(subjects, estimate, windows)

    def settle(self, ticket: Ticket, actual_tokens: int) -> None:
        for subject in ticket.subjects:
            self._in_flight[subject.id] = max(0, self._in_flight.get(subject.id, 0) - 1)
            for name in TOKEN_LIMITS:
                window = ticket.windows.window_of(name)
                self._add(subject.id, name, window, actual_tokens - ticket.estimate)

    fails_closed = False
    forgets_on_restart = True

    def seed(self, used: Mapping[str, Mapping[str, int]]) -> None:
        windows, _ = self._windows.now()
        for subject, counters in used.items():
            for name, amount in counters.items():
                self._add(subject, name, windows.window_of(name), amount)

    async def reachable(self) -> bool:
        return True

    async def close(self) -> None:
        return None
