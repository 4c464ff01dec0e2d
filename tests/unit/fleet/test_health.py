"""Health parsers on real-format text, and the fleet monitor's bookkeeping with a fake
prober and a hand-driven clock."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from inhouse.config import FleetSettings
from inhouse.errors import NotFoundError, UpstreamError
from inhouse.fleet.breaker import BreakerState
from inhouse.fleet.health import (
    FleetMonitor,
    by_name,
    metrics_url,
    parse_inhouse_status,
    parse_model_ids,
    parse_vllm_metrics,
)
from inhouse.fleet.nodes import NodeKind, NodeLoad, NodeSpec
from inhouse.fleet.registry import NodeRegistry
from inhouse.protocol.types import Tier

# Trimmed from a vLLM V1 server with two data-parallel engines: gauges, counters with
# _total/_created, a histogram, an info metric, labels in vLLM's order.
VLLM_V1_TWO_ENGINES = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="Qwen/Qwen2.5-7B-Instruct"} 5.0
vllm:num_requests_running{engine="1",model_name="Qwen/Qwen2.5-7B-Instruct"} 3.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="Qwen/Qwen2.5-7B-Instruct"} 2.0
vllm:num_requests_waiting{engine="1",model_name="Qwen/Qwen2.5-7B-Instruct"} 1.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="Qwen/Qwen2.5-7B-Instruct"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="Qwen/Qwen2.5-7B-Instruct"} 0.75
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="Qwen/Qwen2.5-7B-Instruct"} 45476.0
vllm:prompt_tokens_total{engine="1",model_name="Qwen/Qwen2.5-7B-Instruct"} 40012.0
# HELP vllm:prompt_tokens_created Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_created gauge
vllm:prompt_tokens_created{engine="0",model_name="Qwen/Qwen2.5-7B-Instruct"} 1.7328e+09
# HELP vllm:iteration_tokens_total Histogram of number of tokens per engine_step.
# TYPE vllm:iteration_tokens_total histogram
vllm:iteration_tokens_total_sum{engine="0",model_name="Qwen/Qwen2.5-7B-Instruct"} 812.0
vllm:iteration_tokens_total_bucket{engine="0",le="1.0",model_name="Qwen/Qwen2.5-7B-Instruct"} 3.0
vllm:iteration_tokens_total_bucket{engine="0",le="+Inf",model_name="Qwen/Qwen2.5-7B-Instruct"} 9.0
vllm:iteration_tokens_total_count{engine="0",model_name="Qwen/Qwen2.5-7B-Instruct"} 9.0
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",enable_prefix_caching="True",engine="0"} 1.0
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 9123.0
"""

# An older (V0) vLLM: one engine, the cache gauge under its old name, no engine label.
VLLM_V0 = """\
# HELP vllm:num_requests_running Number of requests currently running on GPU.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="meta-llama/Llama-3.1-8B-Instruct"} 4.0
# HELP vllm:num_requests_swapped Number of requests swapped to CPU.
# TYPE vllm:num_requests_swapped gauge
vllm:num_requests_swapped{model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.0
# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.9
# HELP vllm:cpu_cache_usage_perc CPU KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:cpu_cache_usage_perc gauge
vllm:cpu_cache_usage_perc{model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.1
"""

# What an inhouse node's GET /v1/node/status answers (inhouse.node.service.NodeStatus).
INHOUSE_STATUS: dict[str, Any] = {
    "models": ["smollm2-135m-instruct"],
    "precision": "float32",
    "device": "cpu",
    "ready": True,
    "running": 3,
    "waiting": 1,
    "max_running": 32,
    "tokens_in_flight": 900,
    "max_tokens_in_flight": 8192,
    "oldest_wait_seconds": 0.2,
    "tokens_per_second": 41.5,
    "memory_rss_bytes": 812_000_000,
    "memory_available_bytes": 6_000_000_000,
}


def test_vllm_sums_label_sets_of_several_engines_and_reads_the_new_cache_gauge() -> None:
    load = parse_vllm_metrics(VLLM_V1_TWO_ENGINES, observed_at=12.5)
    assert (load.running, load.waiting) == (8, 3)
    assert load.kv_cache_usage == pytest.approx(0.5)
    assert load.observed_at == 12.5
    assert load.memory_free_bytes is None


def test_vllm_reads_the_old_cache_gauge_and_not_the_cpu_one() -> None:
    load = parse_vllm_metrics(VLLM_V0)
    assert (load.running, load.waiting) == (4, 7)
    assert load.kv_cache_usage == pytest.approx(0.9)


def test_vllm_without_a_cache_gauge_has_unknown_usage() -> None:
    text = 'vllm:num_requests_running{engine="0"} 1\nvllm:num_requests_waiting{engine="0"} 0\n'
    assert parse_vllm_metrics(text).kv_cache_usage is None


@pytest.mark.parametrize(
    "text",
    [
        "# HELP inhouse_requests_total x\ninhouse_requests_total 3\n",  # not vLLM
        "vllm:num_requests_running{engine=0 1\n",  # does not parse
        "",
    ],
)
def test_not_vllm_metrics_are_an_upstream_error(text: str) -> None:
    with pytest.raises(UpstreamError):
        parse_vllm_metrics(text)


def test_inhouse_status_is_read_into_a_load() -> None:
    load = parse_inhouse_status(INHOUSE_STATUS, observed_at=3.0)
    assert load == NodeLoad(
        running=3,
        waiting=1,
        memory_free_bytes=6_000_000_000,
        tokens_per_second=41.5,
        observed_at=3.0,
    )


@pytest.mark.parametrize(
    "status",
    [
        {**INHOUSE_STATUS, "ready": False},
        {**INHOUSE_STATUS, "running": -1},
        {"models": []},
        ["not", "an", "object"],
    ],
)
def test_a_loading_or_malformed_inhouse_status_is_an_upstream_error(status: Any) -> None:
    with pytest.raises(UpstreamError):
        parse_inhouse_status(status)


def test_model_ids_and_the_metrics_url() -> None:
    body = {"object": "list", "data": [{"id": "qwen", "object": "model"}, {"id": "llama"}]}
    assert parse_model_ids(body) == ["qwen", "llama"]
    with pytest.raises(UpstreamError):
        parse_model_ids({"error": "no"})
    assert metrics_url("http://gpu-1:8000/v1") == "http://gpu-1:8000/metrics"
    assert metrics_url("https://proxy/vllm/v1") == "https://proxy/vllm/metrics"


# -- the monitor, with a fake prober ------------------------------------------------


@dataclass
class Clock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeProber:
    """Answers each node's poll from ``loads``; a node in ``down`` fails."""

    loads: dict[str, NodeLoad] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    polled: list[str] = field(default_factory=list)
    tokens: list[str | None] = field(default_factory=list)

    async def poll(self, spec: NodeSpec, token: str | None) -> NodeLoad:
        self.polled.append(spec.name)
        self.tokens.append(token)
        if spec.name in self.down:
            raise UpstreamError(f"{spec.name} unreachable")
        return self.loads.get(spec.name, NodeLoad())


@dataclass
class FakeRegistry:
    specs: list[NodeSpec]

    def list(self) -> list[NodeSpec]:
        return list(self.specs)

    def tokens(self, specs: list[NodeSpec]) -> dict[str, str | None]:
        return {spec.id: f"token-of-{spec.name}" for spec in specs}


def spec(name: str, kind: NodeKind = NodeKind.VLLM) -> NodeSpec:
    return NodeSpec(
        id=f"node_{name}", name=name, url=f"http://{name}:8000/v1", tier=Tier.EDGE,
        kind=kind, models={"m": "m"},
    )  # fmt: skip


SETTINGS = FleetSettings(
    poll_interval_seconds=3600,  # the rounds in these tests are driven by refresh_now
    registry_refresh_seconds=3600,
    failure_threshold=2,
    cooldown_seconds=5,
    max_cooldown_seconds=40,
)


def run(body: Callable[[FleetMonitor, FakeProber, FakeRegistry, Clock], Any]) -> None:
    async def main() -> None:
        registry = FakeRegistry([spec("a"), spec("b")])
        prober, clock = FakeProber(), Clock()
        monitor = FleetMonitor(registry, SETTINGS, clock=clock, prober=prober)  # type: ignore[arg-type]
        await monitor.start()
        try:
            await body(monitor, prober, registry, clock)
        finally:
            await monitor.close()

    asyncio.run(main())


def test_the_monitor_sees_each_nodes_load_with_its_token() -> None:
    async def body(monitor: FleetMonitor, prober: FakeProber, _r: FakeRegistry, c: Clock) -> None:
        prober.loads["a"] = NodeLoad(running=4, waiting=2, observed_at=c.now)
        await monitor.refresh_now()
        seen = by_name(monitor.snapshots())
        assert seen["a"].load.running == 4 and seen["a"].load.waiting == 2
        assert seen["a"].available and seen["b"].available
        assert "token-of-a" in prober.tokens
        assert monitor.token("node_a") == "token-of-a"
        assert monitor.spec("node_b").name == "b"

    run(body)


def test_a_silent_node_is_ejected_after_the_threshold_and_readmitted_by_a_probe(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body(monitor: FleetMonitor, prober: FakeProber, _r: FakeRegistry, c: Clock) -> None:
        prober.down.add("a")
        await monitor.refresh_now()
        assert monitor.state("node_a") is BreakerState.CLOSED  # one failure of two
        await monitor.refresh_now()
        assert monitor.state("node_a") is BreakerState.OPEN
        assert not by_name(monitor.snapshots())["a"].available
        assert by_name(monitor.snapshots())["b"].available
        polled = len(prober.polled)
        await monitor.refresh_now()  # cooling down: not polled at all
        assert prober.polled[polled:] == ["b"]

        c.now += 5  # the cooldown has passed: the next poll is the probe, and fails
        assert by_name(monitor.snapshots())["a"].available
        await monitor.refresh_now()
        assert monitor.state("node_a") is BreakerState.OPEN
        c.now += 5
        assert monitor.state("node_a") is BreakerState.OPEN  # cooldown doubled to 10
        c.now += 5
        prober.down.clear()
        await monitor.refresh_now()
        assert monitor.state("node_a") is BreakerState.CLOSED
        assert by_name(monitor.snapshots())["a"].available

    with caplog.at_level(logging.INFO, logger="inhouse.fleet.health"):
        run(body)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("ejected" in m for m in messages) == 1, messages  # once, not per poll
    assert sum("re-admitted" in m for m in messages) == 1, messages


def test_requests_count_in_flight_and_their_failures_eject() -> None:
    async def body(monitor: FleetMonitor, _p: FakeProber, _r: FakeRegistry, c: Clock) -> None:
        monitor.begin("node_b")
        monitor.begin("node_b")
        assert by_name(monitor.snapshots())["b"].in_flight == 2
        monitor.end("node_b", ok=False)
        monitor.end("node_b", ok=False)
        assert by_name(monitor.snapshots())["b"].in_flight == 0
        assert monitor.state("node_b") is BreakerState.OPEN
        monitor.end("node_b", ok=True)  # one end too many: never below zero
        assert by_name(monitor.snapshots())["b"].in_flight == 0

        c.now += 5  # half-open: begin takes the one probe, the node is unavailable meanwhile
        assert by_name(monitor.snapshots())["b"].available
        monitor.begin("node_b")
        assert not by_name(monitor.snapshots())["b"].available
        monitor.end("node_b", ok=True)
        assert monitor.state("node_b") is BreakerState.CLOSED
        with pytest.raises(NotFoundError):
            monitor.begin("node_nothing")
        monitor.end("node_nothing", ok=True)  # a node removed meanwhile: ignored

    run(body)


def test_the_registry_is_reread_and_a_nodes_breaker_survives_it() -> None:
    async def body(monitor: FleetMonitor, prober: FakeProber, reg: FakeRegistry, _c: Clock) -> None:
        prober.down.add("a")
        await monitor.refresh_now()
        await monitor.refresh_now()
        assert monitor.state("node_a") is BreakerState.OPEN
        reg.specs.append(spec("c", NodeKind.OPENAI))
        await monitor.refresh_now()
        assert set(by_name(monitor.snapshots())) == {"a", "b", "c"}
        assert monitor.state("node_a") is BreakerState.OPEN  # kept across the re-read
        reg.specs[:] = [s for s in reg.specs if s.name != "b"]
        await monitor.refresh_now()
        assert set(by_name(monitor.snapshots())) == {"a", "c"}
        with pytest.raises(NotFoundError):
            monitor.spec("node_b")

    run(body)


def test_a_monitor_must_be_started_before_a_refresh() -> None:
    monitor = FleetMonitor(FakeRegistry([]), SETTINGS)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        asyncio.run(monitor.refresh_now())


def test_the_monitor_is_typed_against_the_real_registry() -> None:
    # FakeRegistry stands for NodeRegistry: the two methods the monitor uses exist there.
    assert callable(NodeRegistry.list) and callable(NodeRegistry.token)
