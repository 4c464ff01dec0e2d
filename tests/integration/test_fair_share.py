"""Fair share of the built-in model's running slots on a real gateway: three tenants that
saturate it each hold at most their share while all three wait; a lone tenant afterwards
gets every slot."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.server import InhouseProcess

SLOTS = 10
CAP = 3  # 30% of 10
TENANTS = ("radiology", "cardiology", "billing")
SAMPLE = re.compile(r'^inhouse_engine_(running|waiting)\{model="[^"]+",tenant="([^"]*)"\} (\S+)$')


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InhouseProcess]:
    directory = tmp_path_factory.mktemp("fair")
    process = InhouseProcess(
        directory / "data",
        INHOUSE_ENGINE__MAX_RUNNING_SEQUENCES=str(SLOTS),
        INHOUSE_ENGINE__MAX_TOKENS_IN_FLIGHT=str(64 * 1024),
        INHOUSE_TENANCY__MAX_SHARE="0.3",
        INHOUSE_GATEWAY__AUTH_CACHE_SECONDS="120",
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def loads(server: InhouseProcess, admin: str) -> dict[str, dict[str, int]]:
    """``{"running": {tenant: n}, "waiting": {tenant: n}}`` from /metrics."""
    text = httpx.get(
        f"{server.base_url}/metrics", headers={"Authorization": f"Bearer {admin}"}, timeout=10
    ).text
    found: dict[str, dict[str, int]] = {"running": {}, "waiting": {}}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match:
            found[match.group(1)][match.group(2)] = int(float(match.group(3)))
    return found


async def flood(
    server: InhouseProcess, keys: list[str], per_key: int, max_tokens: int
) -> list[int]:
    """``per_key`` requests with each key at once, sent in turn (one of each key, then the
    next round), as tenants that all keep the model busy."""
    body = {
        "model": "smollm2-135m-instruct",
        "messages": [{"role": "user", "content": "Tell me a long story about the sea."}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    async with httpx.AsyncClient(base_url=server.base_url, timeout=300) as client:
        answers = await asyncio.gather(
            *(
                client.post(
                    "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
                )
                for _ in range(per_key)
                for key in keys
            )
        )
    return [answer.status_code for answer in answers]


async def sample_while(
    server: InhouseProcess, admin: str, work: asyncio.Future[list[int]]
) -> list[dict[str, dict[str, int]]]:
    samples = []
    while not work.done():
        samples.append(await asyncio.to_thread(loads, server, admin))
        await asyncio.sleep(0.05)
    return samples


def test_saturating_tenants_each_hold_at_most_their_share_and_a_lone_one_gets_all(
    server: InhouseProcess,
) -> None:
    keys = {tenant: server.new_key(tenant) for tenant in TENANTS}
    admin = server.admin_key
    for key in (*keys.values(), admin):  # known to the gateway: none waits for its lookup
        models = f"{server.base_url}/v1/models"
        assert httpx.get(models, headers={"Authorization": f"Bearer {key}"}).status_code == 200

    async def together() -> tuple[list[int], list[dict[str, dict[str, int]]]]:
        work = asyncio.ensure_future(flood(server, [keys[t] for t in TENANTS], 8, 40))
        samples = await sample_while(server, admin, work)
        return await work, samples

    statuses, samples = asyncio.run(together())
    assert statuses == [200] * 8 * len(TENANTS)
    contended = [s for s in samples if all(s["waiting"].get(t, 0) > 0 for t in TENANTS)]
    assert len(contended) >= 3, samples  # sampled while all three waited
    for sample in contended:
        for tenant in TENANTS:
            assert sample["running"].get(tenant, 0) <= CAP, sample
    assert max(sum(s["running"].values()) for s in contended) == len(TENANTS) * CAP

    async def alone() -> tuple[list[int], list[dict[str, dict[str, int]]]]:
        work = asyncio.ensure_future(flood(server, [keys["billing"]], 14, 40))
        samples = await sample_while(server, admin, work)
        return await work, samples

    codes, samples = asyncio.run(alone())
    assert codes == [200] * 14
    assert max(s["running"].get("billing", 0) for s in samples) == SLOTS
    idle = loads(server, admin)  # every slot given back
    assert sum(idle["running"].values()) == 0 and sum(idle["waiting"].values()) == 0
