"""The fleet monitor against real servers on loopback: the fake vLLM's live load, ejection
of a node that stops answering within failure_threshold polls, re-admission after it
comes back; and a real ``inhouse node`` that registers itself with a real gateway."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import httpx
import pytest

from inhouse.config import FleetSettings, Settings
from inhouse.fleet.breaker import BreakerState
from inhouse.fleet.health import FleetMonitor, by_name
from inhouse.fleet.nodes import NodeKind, NodeSnapshot
from inhouse.fleet.registry import NodeRegistry
from inhouse.gateway.control import open_control
from inhouse.protocol.types import Tier
from inhouse.security.audit import AuditLog
from inhouse.store.db import Database
from inhouse.store.migrate import upgrade_to_head
from tests.integration.fake_vllm import FakeVllm
from tests.integration.server import InhouseProcess
from tests.keyrings import keyring_for

TOKEN = "fleet-token-for-tests-0123456789"
MODEL = "smollm2-135m-instruct"

# Rounds driven by refresh_now(): the background loop sleeps through the test.
DRIVEN = FleetSettings(
    poll_interval_seconds=3600,
    registry_refresh_seconds=3600,
    poll_timeout_seconds=0.5,
    failure_threshold=2,
    cooldown_seconds=0.5,
    max_cooldown_seconds=4,
)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[NodeRegistry]:
    db = Database(f"sqlite:///{tmp_path / 'fleet.db'}")
    upgrade_to_head(db.engine)
    try:
        yield NodeRegistry(db, AuditLog(db, b"s" * 32, keyring_for(db)))
    finally:
        db.dispose()


def monitored(
    registry: NodeRegistry,
    settings: FleetSettings,
    body: Callable[[FleetMonitor], Awaitable[None]],
) -> None:
    async def main() -> None:
        monitor = FleetMonitor(registry, settings)
        await monitor.start()
        try:
            await body(monitor)
        finally:
            await monitor.close()

    asyncio.run(main())


def only(monitor: FleetMonitor) -> NodeSnapshot:
    [snapshot] = monitor.snapshots()
    return snapshot


async def until(check: Callable[[], bool], within: float, what: str) -> float:
    """Seconds until ``check`` holds; fails after ``within`` seconds."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within, f"not within {within} s: {what}"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def test_the_monitor_reads_vllm_load_ejects_it_silent_and_readmits_it(
    registry: NodeRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    with FakeVllm(capacity=2, delay_seconds=1.5, token=TOKEN, engines=2) as vllm:
        node = registry.add(
            vllm.url,
            tier=Tier.CENTER,
            kind=NodeKind.VLLM,
            models={"qwen": vllm.models[0]},
            actor="test",
        )

        async def body(monitor: FleetMonitor) -> None:
            assert only(monitor).available and only(monitor).load.observed_at > 0
            async with aiohttp.ClientSession() as http:
                chat = {"model": vllm.models[0], "messages": [{"role": "user", "content": "hi"}]}
                headers = {"Authorization": f"Bearer {TOKEN}"}
                requests = [
                    asyncio.create_task(
                        http.post(f"{vllm.url}/chat/completions", json=chat, headers=headers)
                    )
                    for _ in range(5)
                ]
                await until(lambda: vllm.running == 2 and vllm.waiting == 3, 5, "requests in")
                await monitor.refresh_now()
                load = only(monitor).load
                assert (load.running, load.waiting) == (2, 3)
                assert load.kv_cache_usage == pytest.approx(1.0)
                for response in await asyncio.gather(*requests):
                    assert response.status == 200
                    response.release()
            await monitor.refresh_now()
            assert (only(monitor).load.running, only(monitor).load.waiting) == (0, 0)

            vllm.silent = True  # it stops answering: ejected at the second failed poll
            await monitor.refresh_now()
            assert monitor.state(node.id) is BreakerState.CLOSED and only(monitor).available
            await monitor.refresh_now()
            assert monitor.state(node.id) is BreakerState.OPEN and not only(monitor).available
            await monitor.refresh_now()  # cooling down: not even asked
            assert not only(monitor).available

            vllm.silent = False  # it comes back: the poll after the cooldown re-admits it
            await asyncio.sleep(DRIVEN.cooldown_seconds)
            assert only(monitor).available  # half-open: the probe may go
            await monitor.refresh_now()
            assert monitor.state(node.id) is BreakerState.CLOSED and only(monitor).available

            vllm.fail_status = 500  # failing is not answering either
            await monitor.refresh_now()
            await monitor.refresh_now()
            assert monitor.state(node.id) is BreakerState.OPEN

        with caplog.at_level(logging.INFO, logger="inhouse.fleet.health"):
            monitored(registry, DRIVEN, body)
    messages = [record.getMessage() for record in caplog.records]
    assert sum("ejected" in m for m in messages) == 2, messages  # once per ejection
    assert sum("re-admitted" in m for m in messages) == 1, messages


def test_in_the_background_ejection_and_readmission_take_a_few_polls(
    registry: NodeRegistry,
) -> None:
    settings = FleetSettings(
        poll_interval_seconds=0.2,
        poll_timeout_seconds=0.3,
        registry_refresh_seconds=0.2,
        failure_threshold=3,
        cooldown_seconds=0.5,
        max_cooldown_seconds=2,
    )
    with FakeVllm(legacy_metric_names=True) as vllm:
        registry.add(vllm.url, tier="edge", kind="vllm", models={"m": vllm.models[0]}, actor="t")

        async def body(monitor: FleetMonitor) -> None:
            vllm.silent = True
            # Three failed polls, each a round of interval + timeout at most.
            ejected = await until(lambda: not only(monitor).available, 3 * 0.5 + 1.0, "eject")
            assert ejected >= 2 * 0.3  # not before the third poll
            vllm.silent = False
            back = await until(
                lambda: monitor.state(only(monitor).spec.id) is BreakerState.CLOSED,
                0.5 + 2 * 0.5 + 1.0,
                "re-admit",
            )
            print(f"ejected after {ejected:.2f} s, re-admitted {back:.2f} s after it came back")

        monitored(registry, settings, body)


def test_an_openai_node_is_polled_with_its_own_token(
    registry: NodeRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INHOUSE_NODE_TOKEN_EDGE", "edge-secret")
    with FakeVllm(models=("llama",), token="edge-secret", serve_metrics=False) as server:
        node = registry.add(
            server.url,
            tier="edge",
            kind="openai",
            models={"llama": "llama"},
            token_env="INHOUSE_NODE_TOKEN_EDGE",
            actor="t",
        )

        async def body(monitor: FleetMonitor) -> None:
            assert monitor.state(node.id) is BreakerState.CLOSED
            assert monitor.token(node.id) == "edge-secret"
            server.token = "rotated"  # the node no longer takes ours
            await monitor.refresh_now()
            await monitor.refresh_now()
            assert monitor.state(node.id) is BreakerState.OPEN

        monitored(registry, DRIVEN, body)


# -- a real inhouse node, registering itself with a real gateway ----------------------


@pytest.mark.model
def test_a_real_node_registers_itself_and_the_monitor_reads_its_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = InhouseProcess(
        tmp_path / "gateway",
        builtin_model=False,
        INHOUSE_NODE_TOKEN=TOKEN,
        INHOUSE_FLEET__SELF_REGISTRATION="true",
    )
    gateway.start()
    node = InhouseProcess(
        tmp_path / "node", INHOUSE_NODE_TOKEN=TOKEN, INHOUSE_FLEET__HEARTBEAT_SECONDS="0.5"
    )
    try:
        started = time.monotonic()
        node.start(
            180.0,
            "node",
            "--model",
            MODEL,
            "--dtype",
            "float32",
            "--register",
            gateway.base_url,
            "--tier",
            "edge",
            "--node-name",
            "edge-1",
        )
        ready = time.monotonic() - started
        while "edge-1" not in gateway.cli("nodes", "list").stdout:
            assert time.monotonic() - started < ready + 20, "the node never registered"
            time.sleep(0.3)
        print(f"inhouse node ready in {ready:.1f} s, registered {time.monotonic() - started:.1f} s")

        detected = InhouseProcess(
            tmp_path / "other", builtin_model=False, INHOUSE_NODE_TOKEN=TOKEN
        ).cli("nodes", "add", f"{node.base_url}/v1", "--tier", "edge")
        assert "detected kind: inhouse" in detected.stdout
        assert f"models from the node: {MODEL}" in detected.stdout

        monkeypatch.setenv("INHOUSE_NODE_TOKEN", TOKEN)
        control = open_control(Settings(data_dir=gateway.data_dir, builtin_model=False))

        async def waiting(monitor: FleetMonitor) -> None:
            snapshot = by_name(monitor.snapshots())["edge-1"]
            assert snapshot.load.observed_at > 0  # polled with the fleet token ...
            assert not snapshot.available  # ... but never routed before an operator approves

        monitored(control.nodes, DRIVEN, waiting)
        gateway.cli("nodes", "approve", "edge-1")
        status = f"{node.base_url}/v1/node/status"
        deadline = time.monotonic() + 10
        while httpx.get(status, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200:
            assert time.monotonic() < deadline, "the node never received its own token"
            time.sleep(0.2)  # at its next registration, the node takes its own token
        own = control.nodes.token(control.nodes.get("edge-1"))
        assert own is not None and own != TOKEN
        assert httpx.get(status, headers={"Authorization": f"Bearer {own}"}).status_code == 200

        async def body(monitor: FleetMonitor) -> None:
            snapshot = by_name(monitor.snapshots())["edge-1"]
            assert snapshot.spec.kind is NodeKind.INHOUSE and snapshot.spec.tier is Tier.EDGE
            assert snapshot.spec.url == f"{node.base_url}/v1"
            assert dict(snapshot.spec.models) == {MODEL: MODEL}
            assert snapshot.spec.capacity >= 1 and (snapshot.spec.memory_bytes or 0) > 2**28
            assert snapshot.available and snapshot.load.observed_at > 0
            assert (snapshot.load.memory_free_bytes or 0) > 0
            assert snapshot.load.tokens_per_second is not None

            async with aiohttp.ClientSession() as http:
                chat = {
                    "model": MODEL,
                    "max_tokens": 8,
                    "temperature": 0,
                    "messages": [{"role": "user", "content": "Tell me about Paris."}],
                }
                headers = {"Authorization": f"Bearer {own}"}
                requests = [
                    asyncio.create_task(
                        http.post(
                            f"{node.base_url}/v1/chat/completions", json=chat, headers=headers
                        )
                    )
                    for _ in range(3)
                ]
                sent = time.monotonic()
                seen = 0
                while not all(r.done() for r in requests) and not seen:
                    await monitor.refresh_now()
                    load = by_name(monitor.snapshots())["edge-1"].load
                    seen = load.running + load.waiting
                    await asyncio.sleep(0.05)
                assert seen > 0, "the node's status never showed the requests"
                for response in await asyncio.gather(*requests):
                    assert response.status == 200
                    response.release()
                print(f"3 requests answered in {time.monotonic() - sent:.1f} s")

            stopping = time.monotonic()
            node.stop()
            print(f"node stopped in {time.monotonic() - stopping:.1f} s")
            for _ in range(DRIVEN.failure_threshold):
                await monitor.refresh_now()
            assert not by_name(monitor.snapshots())["edge-1"].available

        try:
            monitored(control.nodes, DRIVEN, body)
        finally:
            control.db.dispose()
        actions = [e.action for e in control.audit.entries()]
        assert actions[-2:] == ["node.approve", "node.register"]  # the token handed over
    finally:
        if node.process is not None:
            node.stop()
        gateway.stop()
