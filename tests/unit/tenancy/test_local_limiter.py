"""The in-process admission counters, seeded with what was used before a restart."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from inhouse.errors import RateLimitError
from inhouse.tenancy.admission import LocalLimiter, Subject
from inhouse.tenancy.quotas import Quota

NOW = datetime(2026, 12, 7, 10, 30, 20, tzinfo=UTC)


def test_a_seeded_limiter_grants_only_what_is_left() -> None:
    limiter = LocalLimiter(clock=NOW.timestamp)
    tenant = Subject("t:bank", "tenant 'bank'", Quota(tokens_per_day=100, requests_per_minute=3))
    limiter.seed({"t:bank": {"tokens_per_day": 60, "requests_per_minute": 1}})

    async def scenario() -> None:
        await limiter.acquire([tenant], 40)  # exactly what is left of the day
        with pytest.raises(RateLimitError, match="tokens_per_day"):
            await limiter.acquire([tenant], 1)
        await limiter.acquire([tenant], 0)  # the third request of the minute
        with pytest.raises(RateLimitError, match="requests_per_minute"):
            await limiter.acquire([tenant], 0)

    asyncio.run(scenario())
