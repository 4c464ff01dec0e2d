from __future__ import annotations

import pytest

from inhouse.errors import RateLimitError
from inhouse.security.login_throttle import LoginThrottle


def test_attempts_beyond_the_limit_wait_for_the_window_to_slide() -> None:
    now = [100.0]
    throttle = LoginThrottle(3, clock=lambda: now[0])
    for _ in range(3):
        throttle.check("10.0.0.7")
    with pytest.raises(RateLimitError) as raised:
        throttle.check("10.0.0.7")
    assert raised.value.code == "too_many_login_attempts"
    assert raised.value.retry_after_seconds == pytest.approx(60.0)
    throttle.check("10.0.0.8")  # another client is not affected
    now[0] += 60.0
    throttle.check("10.0.0.7")
