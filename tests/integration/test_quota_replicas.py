"""A token budget shared by two gateway replicas through PostgreSQL and Redis: a burst
of 200 concurrent requests never overshoots it, and the usage table adds up to exactly
what the clients were told they used."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.integration.fake_upstream import FakeUpstream
from tests.integration.server import InhouseProcess

BUDGET = 20_000
MAX_TOKENS = 500
SECRET = "replicas-share-this-secret-key-0123456789"
# Replicas on one database share its master key too (from a secret store, here the env).
MASTER_KEY = base64.urlsafe_b64encode(b"replicas share this master key!!").decode()


@pytest.fixture
def replicas(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> Iterator[tuple[InhouseProcess, InhouseProcess]]:
    shared = {
        "INHOUSE_DATABASE_URL": postgres_url.replace("postgresql://", "postgresql+psycopg://"),
        "INHOUSE_REDIS_URL": redis_url,
        "INHOUSE_SECRET_KEY": SECRET,
        "INHOUSE_CRYPTO__KEY_PROVIDER": "env",
        "INHOUSE_MASTER_KEY": MASTER_KEY,
        "INHOUSE_GATEWAY__QUOTA_CACHE_SECONDS": "0.5",
    }
    first = InhouseProcess(tmp_path / "one", builtin_model=False, **shared)
    second = InhouseProcess(tmp_path / "two", builtin_model=False, **shared)
    first.start()
    second.start()
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()


def test_two_replicas_never_overshoot_a_budget_and_meter_exactly(
    replicas: tuple[InhouseProcess, InhouseProcess], postgres_url: str
) -> None:
    first, second = replicas
    with FakeUpstream(delay_seconds=0.3, full_completions=True) as upstream:
        key = first.new_key("acme")
        first.cli("quotas", "set", "acme", "--tokens-per-day", str(BUDGET))
        first.cli("models", "add", "llm", "--url", upstream.url, "--tenant", "acme")
        body = {"model": "llm", "messages": [{"role": "user", "content": "hi"}]}
        answers = asyncio.run(burst(first, second, key, {**body, "max_tokens": MAX_TOKENS}))

    granted = [a.json()["usage"]["total_tokens"] for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 429]
    assert len(granted) + len(refused) == 200, {a.status_code for a in answers}
    assert sum(granted) <= BUDGET  # zero overshoot
    # A replica counting alone would admit as much again and overshoot: the burst
    # must have used more than half the budget for this test to tell.
    assert sum(granted) > BUDGET / 2
    assert refused[0].json()["error"]["code"] == "tokens_per_day_exceeded"
    assert "tenant 'acme' is over its tokens_per_day quota: 20000" in refused[0].text
    assert int(refused[0].headers["retry-after"]) >= 1

    first.stop()
    second.stop()  # SIGTERM: both flush their usage
    engine = create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as connection:
        rows, tokens = connection.execute(
            text(
                "SELECT count(*), sum(prompt_tokens + completion_tokens) FROM usage_records "
                "WHERE model = 'llm' AND status_code = 200"
            )
        ).one()
    engine.dispose()
    assert (rows, tokens) == (len(granted), sum(granted))


async def burst(
    first: InhouseProcess, second: InhouseProcess, key: str, body: dict[str, object]
) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=200)
    for server in (first, second):
        wait_for_model(server.base_url, key)
    async with httpx.AsyncClient(timeout=60, headers=headers, limits=limits) as client:
        return await asyncio.gather(
            *(
                client.post(f"{(first, second)[n % 2].base_url}/v1/chat/completions", json=body)
                for n in range(200)
            )
        )


def wait_for_model(base_url: str, key: str) -> None:
    for _ in range(100):
        if '"llm"' in httpx.get(f"{base_url}/v1/models", headers=auth(key)).text:
            return
        time.sleep(0.1)
    raise AssertionError(f"{base_url} never listed the model")


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_an_unreachable_redis_fails_as_configured_and_readyz_says_so(
    tmp_path: Path, mode: str
) -> None:
    server = InhouseProcess(
        tmp_path / "data",
        builtin_model=False,
        INHOUSE_REDIS_URL="redis://127.0.0.1:1/0",  # nothing listens there
        INHOUSE_GATEWAY__QUOTA_FAILURE_MODE=mode,
    )
    with FakeUpstream() as upstream:
        server.start(require_ready=mode == "open")
        try:
            limited, free = server.new_key("limited"), server.new_key("free")
            server.cli("quotas", "set", "limited", "--rpm", "100")
            server.cli("models", "add", "llm", "--url", upstream.url)
            readiness = httpx.get(f"{server.base_url}/readyz")
            assert readiness.json()["quota_store"] is False
            assert readiness.status_code == (503 if mode == "closed" else 200)
            body = {"model": "llm", "messages": [{"role": "user", "content": "hi"}]}
            with httpx.Client(base_url=server.base_url, timeout=30) as http:
                wait_for_model(server.base_url, free)
                answer = http.post("/v1/chat/completions", json=body, headers=auth(limited))
                assert answer.status_code == (503 if mode == "closed" else 200)
                if mode == "closed":
                    assert answer.json()["error"]["code"] == "quota_store_unavailable"
                # A tenant without quotas never needs Redis.
                free_answer = http.post("/v1/chat/completions", json=body, headers=auth(free))
                assert free_answer.status_code == 200
        finally:
            server.stop()
    assert "Redis quota store unreachable" in server.log_path.read_text()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
