"""A circuit breaker per node: pure, synchronous, with the clock passed in.

    closed ──(failure_threshold consecutive failures)──▶ open
    open ──(cooldown elapsed)──▶ half_open
    half_open ──(the one probe succeeds)──▶ closed   (cooldown back to its base)
    half_open ──(the probe fails)──▶ open             (cooldown doubled, up to the max)

Closed admits everything; open admits nothing; half-open admits exactly one probe at a
time (``allow`` hands it out), so that a node that came back is tried by one request,
not by every request that was waiting for it. A probe whose outcome is never reported
(a lost task) frees its slot after ``max_cooldown_seconds``.
"""

from __future__ import annotations

from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    """Healthy: requests flow."""
    OPEN = "open"
    """Ejected: nothing is sent until the cooldown has passed."""
    HALF_OPEN = "half_open"
    """Cooled down: one probe at a time decides."""


class CircuitBreaker:
    """One node's breaker. Every method takes ``now`` (monotonic seconds)."""

    def __init__(
        self, failure_threshold: int, cooldown_seconds: float, max_cooldown_seconds: float
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if cooldown_seconds <= 0 or max_cooldown_seconds <= 0:
            raise ValueError("cooldowns must be positive")
        self.failure_threshold = failure_threshold
        self.base_cooldown = cooldown_seconds
        self.max_cooldown = max(max_cooldown_seconds, cooldown_seconds)
        self._failures = 0
        self._cooldown = cooldown_seconds
        self._open_until: float | None = None
        """When the breaker is (or was last) open: the end of that cooldown."""
        self._probe_since: float | None = None

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    @property
    def cooldown(self) -> float:
        """The cooldown the breaker is in, or would use when it next opens from closed."""
        return self._cooldown

    def state(self, now: float) -> BreakerState:
        if self._open_until is None:
            return BreakerState.CLOSED
        return BreakerState.OPEN if now < self._open_until else BreakerState.HALF_OPEN

    def available(self, now: float) -> bool:
        """Whether ``allow(now)`` would say yes, without taking the probe slot."""
        state = self.state(now)
        if state is BreakerState.CLOSED:
            return True
        return state is BreakerState.HALF_OPEN and not self._probing(now)

    def allow(self, now: float) -> bool:
        """May one request (or poll) go to the node now? In half-open this hands out the
        one probe slot: the caller must report its outcome with ``record_*``."""
        state = self.state(now)
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN or self._probing(now):
            return False
        self._probe_since = now
        return True

    def record_success(self, now: float) -> None:
        """A success closes the breaker and resets the cooldown. One reported while open
        (a request sent before it opened) changes nothing: the cooldown runs its course."""
        if self.state(now) is BreakerState.OPEN:
            return
        self._failures = 0
        self._open_until = None
        self._probe_since = None
        self._cooldown = self.base_cooldown

    def record_failure(self, now: float) -> None:
        """Count a failure: the threshold-th in a row opens the breaker; a failure in
        half-open (the probe's) re-opens it for twice the cooldown. One reported while
        open changes nothing."""
        state = self.state(now)
        if state is BreakerState.OPEN:
            return
        if state is BreakerState.HALF_OPEN:
            self._cooldown = min(self._cooldown * 2, self.max_cooldown)
            self._open(now)
            return
        self._failures += 1
        if self._failures >= self.failure_threshold:
            self._cooldown = self.base_cooldown
            self._open(now)

    def _open(self, now: float) -> None:
        self._open_until = now + self._cooldown
        self._probe_since = None

    def _probing(self, now: float) -> bool:
        return self._probe_since is not None and now - self._probe_since < self.max_cooldown
