from __future__ import annotations

import asyncio
import threading

import pytest

from inhouse.errors import RateLimitError
from inhouse.security.login_throttle import FailureAudit, LoginThrottle, PasswordPool


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


def test_a_full_password_pool_refuses_at_once_instead_of_queueing() -> None:
    """Written as the attack: logins that keep the hasher busy. Beyond its threads and
    its short line, a login is refused with 429 without waiting for a thread."""
    release = threading.Event()

    async def scenario() -> None:
        pool = PasswordPool(workers=1, queue=1)
        slow = [asyncio.create_task(pool.run(release.wait)) for _ in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(RateLimitError) as refused:
            await pool.run(lambda: True)
        assert refused.value.code == "logins_busy"
        release.set()
        await asyncio.gather(*slow)
        assert await pool.run(lambda: "free again") == "free again"
        pool.close()

    asyncio.run(scenario())


def test_failed_logins_are_audited_at_a_bounded_rate_and_the_rest_counted() -> None:
    now = [0.0]
    audit = FailureAudit(per_name=2, overall=3, clock=lambda: now[0])
    assert [audit.admit("root") for _ in range(4)] == [(True, 0), (True, 0), (False, 0), (False, 0)]
    assert audit.admit("alice") == (True, 2)  # names the two held back before it
    assert audit.admit("bob") == (False, 0)  # three a minute in all
    now[0] += 60.0
    assert audit.admit("root") == (True, 1)
