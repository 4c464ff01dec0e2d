"""Admission counters, in-process and in Redis: the same behaviour from both."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from inhouse.errors import InvalidRequestError, QuotaStoreUnavailableError, RateLimitError
from inhouse.tenancy.admission import Limiter, LocalLimiter, Subject, Windows
from inhouse.tenancy.quotas import Quota
from inhouse.tenancy.redis_limiter import RedisLimiter


def subject(**limits: Any) -> Subject:
    return Subject(f"t:{uuid.uuid4().hex}", "tenant 'acme'", Quota(**limits))


@pytest.fixture(params=["local", "redis"])
def limiter_factory(request: pytest.FixtureRequest) -> Callable[[], Limiter]:
    if request.param == "local":
        return LocalLimiter
    url: str = request.getfixturevalue("redis_url")
    return lambda: RedisLimiter(url, fail_open=False, lease_seconds=60)


def run(factory: Callable[[], Limiter], scenario: Callable[[Limiter], Awaitable[None]]) -> None:
    async def main() -> None:
        limiter = factory()
        try:
            await scenario(limiter)
        finally:
            await limiter.close()

    asyncio.run(main())


async def settled(limiter: Limiter) -> None:
    await asyncio.sleep(0.05)  # Redis settles in a background task


def test_a_token_budget_admits_reservations_up_to_the_limit_and_no_further(
    limiter_factory: Callable[[], Limiter],
) -> None:
    acme = subject(tokens_per_day=1000)

    async def scenario(limiter: Limiter) -> None:
        first = await limiter.acquire([acme], 600)
        with pytest.raises(RateLimitError) as refused:
            await limiter.acquire([acme], 500)
        assert refused.value.code == "tokens_per_day_exceeded"
        assert "tenant 'acme' is over its tokens_per_day quota: 1000" in refused.value.message
        assert 0 < refused.value.retry_after_seconds <= 86400
        limiter.settle(first, 100)  # used far less than reserved: the rest comes back
        await settled(limiter)
        second = await limiter.acquire([acme], 900)
        limiter.settle(second, 900)
        await settled(limiter)
        with pytest.raises(RateLimitError):
            await limiter.acquire([acme], 1)

    run(limiter_factory, scenario)


def test_concurrency_slots_are_held_until_settled(
    limiter_factory: Callable[[], Limiter],
) -> None:
    acme = subject(concurrency=2)

    async def scenario(limiter: Limiter) -> None:
        a = await limiter.acquire([acme], 0)
        await limiter.acquire([acme], 0)
        with pytest.raises(RateLimitError) as refused:
            await limiter.acquire([acme], 0)
        assert refused.value.code == "concurrency_exceeded"
        assert refused.value.retry_after_seconds == 1
        limiter.settle(a, 0)
        await settled(limiter)
        await limiter.acquire([acme], 0)

    run(limiter_factory, scenario)


def test_requests_per_minute_counts_admitted_requests(
    limiter_factory: Callable[[], Limiter],
) -> None:
    acme = subject(requests_per_minute=3)

    async def scenario(limiter: Limiter) -> None:
        for _ in range(3):
            limiter.settle(await limiter.acquire([acme], 0), 0)
        with pytest.raises(RateLimitError) as refused:
            await limiter.acquire([acme], 0)
        assert refused.value.code == "requests_per_minute_exceeded"
        assert refused.value.retry_after_seconds <= 60

    run(limiter_factory, scenario)


def test_a_key_limit_and_its_tenant_limit_both_apply_and_refusal_reserves_nothing(
    limiter_factory: Callable[[], Limiter],
) -> None:
    tenant = subject(tokens_per_minute=1000)
    key = Subject(f"k:{uuid.uuid4().hex}", "key key_1", Quota(tokens_per_minute=300))

    async def scenario(limiter: Limiter) -> None:
        await limiter.acquire([tenant, key], 200)
        with pytest.raises(RateLimitError) as refused:
            await limiter.acquire([tenant, key], 200)
        assert refused.value.message.startswith("key key_1 is over its tokens_per_minute")
        # The refused request reserved nothing on the tenant: 800 still fit.
        await limiter.acquire([tenant], 800)

    run(limiter_factory, scenario)


def test_concurrent_acquires_never_overshoot(limiter_factory: Callable[[], Limiter]) -> None:
    acme = subject(tokens_per_day=10_000)

    async def scenario(limiter: Limiter) -> None:
        async def one() -> int:
            try:
                await limiter.acquire([acme], 300)
            except RateLimitError:
                return 0
            return 300

        granted = await asyncio.gather(*(one() for _ in range(100)))
        assert sum(granted) == 9_900  # 33 fit; the 34th would overshoot

    run(limiter_factory, scenario)


def test_windows_end_at_minute_day_and_month_boundaries() -> None:
    moment = datetime(2026, 12, 31, 23, 59, 30, tzinfo=UTC)
    windows = Windows.at(moment)
    assert (windows.minute, windows.day, windows.month) == ("202612312359", "20261231", "202612")
    now = moment.timestamp()
    assert windows.retry_after("requests_per_minute", now) == 30
    assert windows.retry_after("tokens_per_day", now) == 30
    assert windows.retry_after("tokens_per_month", now) == 30
    assert windows.retry_after("concurrency", now) == 1


def test_a_new_day_starts_from_zero() -> None:
    moment = [datetime(2026, 11, 25, 23, 59, tzinfo=UTC)]
    acme = subject(tokens_per_day=100)
    limiter = LocalLimiter(clock=lambda: moment[0].timestamp())

    async def scenario() -> None:
        limiter.settle(await limiter.acquire([acme], 100), 100)
        with pytest.raises(RateLimitError):
            await limiter.acquire([acme], 1)
        moment[0] = datetime(2026, 11, 26, 0, 1, tzinfo=UTC)
        await limiter.acquire([acme], 100)

    asyncio.run(scenario())


def test_unreachable_redis_fails_closed_or_open_as_configured() -> None:
    acme = subject(concurrency=1)

    async def scenario() -> None:
        # Nothing listens on port 1.
        closed = RedisLimiter("redis://127.0.0.1:1/0", fail_open=False, lease_seconds=60)
        with pytest.raises(QuotaStoreUnavailableError):
            await closed.acquire([acme], 10)
        assert await closed.reachable() is False
        assert closed.fails_closed
        opened = RedisLimiter("redis://127.0.0.1:1/0", fail_open=True, lease_seconds=60)
        ticket = await opened.acquire([acme], 10)
        await opened.acquire([acme], 10)  # unenforced: the concurrency limit is not checked
        assert ticket.enforced is False
        opened.settle(ticket, 10)
        await closed.close()
        await opened.close()

    asyncio.run(scenario())


def test_settling_survives_a_redis_that_forgot_its_scripts(redis_url: str) -> None:
    import redis

    acme = subject(tokens_per_day=100)

    async def scenario() -> None:
        limiter = RedisLimiter(redis_url, fail_open=False, lease_seconds=60)
        ticket = await limiter.acquire([acme], 100)
        redis.Redis.from_url(redis_url).script_flush()  # as after a Redis restart
        limiter.settle(ticket, 40)
        await limiter.close()
        again = RedisLimiter(redis_url, fail_open=False, lease_seconds=60)
        await again.acquire([acme], 60)  # fits only if the 60 unused tokens came back
        with pytest.raises(RateLimitError):
            await again.acquire([acme], 1)
        await again.close()

    asyncio.run(scenario())


def test_a_request_no_window_could_ever_admit_is_a_400_not_a_429(
    limiter_factory: Callable[[], Limiter],
) -> None:
    acme = subject(tokens_per_minute=1000)

    async def scenario(limiter: Limiter) -> None:
        with pytest.raises(InvalidRequestError) as refused:
            await limiter.acquire([acme], 1001)
        assert refused.value.code == "exceeds_quota" and refused.value.param == "max_tokens"
        assert "tokens_per_minute quota of 1000" in refused.value.message
        await limiter.acquire([acme], 1000)

    run(limiter_factory, scenario)


def test_a_settlement_sent_twice_refunds_once(redis_url: str) -> None:
    acme = subject(tokens_per_day=1000)

    async def scenario() -> None:
        limiter = RedisLimiter(redis_url, fail_open=False, lease_seconds=60)
        ticket = await limiter.acquire([acme], 600)
        limiter.settle(ticket, 100)
        limiter.settle(ticket, 100)  # as a retry after a timeout would
        await limiter.close()
        again = RedisLimiter(redis_url, fail_open=False, lease_seconds=60)
        await again.acquire([acme], 900)  # 100 used: 900 fit, and no more
        with pytest.raises(RateLimitError):
            await again.acquire([acme], 1)
        await again.close()

    asyncio.run(scenario())


def test_a_long_request_keeps_its_concurrency_slot_past_its_first_lease(redis_url: str) -> None:
    acme = subject(concurrency=1)

    async def scenario() -> None:
        limiter = RedisLimiter(redis_url, fail_open=False, lease_seconds=0.6)
        ticket = await limiter.acquire([acme], 0)
        await asyncio.sleep(1.5)  # more than two leases: renewed while it runs
        with pytest.raises(RateLimitError, match="concurrency"):
            await limiter.acquire([acme], 0)
        limiter.settle(ticket, 0)
        await asyncio.sleep(0.1)
        limiter.settle(await limiter.acquire([acme], 0), 0)
        await limiter.close()

    asyncio.run(scenario())
