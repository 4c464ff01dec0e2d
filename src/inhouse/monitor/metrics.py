"""Prometheus metrics of the gateway, in a registry owned by one application."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
UNRESOLVED_MODEL = "-"
STEP_BUCKETS = (0.00001, 0.00003, 0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 1)


@dataclass(frozen=True, slots=True)
class NodeGauge:
    """One fleet node as the metrics show it."""

    node: str
    tier: str
    available: bool
    in_flight: int
    running: int
    waiting: int


class _FleetCollector(Collector):
    """Reads the fleet's state when scraped, so the gauges are never stale."""

    def __init__(self, read: Callable[[], Iterable[NodeGauge]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        labels = ["node", "tier"]
        available = GaugeMetricFamily(
            "inhouse_fleet_node_available",
            "1 while the node is healthy and its circuit breaker admits requests.",
            labels=labels,
        )
        in_flight = GaugeMetricFamily(
            "inhouse_fleet_node_in_flight", "Requests this gateway has on the node.", labels=labels
        )
        running = GaugeMetricFamily(
            "inhouse_fleet_node_running", "Sequences the node last reported running.", labels=labels
        )
        waiting = GaugeMetricFamily(
            "inhouse_fleet_node_waiting", "Requests the node last reported waiting.", labels=labels
        )
        for gauge in self._read():
            values = [gauge.node, gauge.tier]
            available.add_metric(values, 1.0 if gauge.available else 0.0)
            in_flight.add_metric(values, gauge.in_flight)
            running.add_metric(values, gauge.running)
            waiting.add_metric(values, gauge.waiting)
        yield from (available, in_flight, running, waiting)


@dataclass(frozen=True, slots=True)
class EngineGauge:
    """One tenant's load on one local engine."""

    model: str
    tenant: str
    running: int
    waiting: int


class _EngineCollector(Collector):
    """Reads the local engines' slots per tenant when scraped."""

    def __init__(self, read: Callable[[], Iterable[EngineGauge]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        labels = ["model", "tenant"]
        running = GaugeMetricFamily(
            "inhouse_engine_running",
            "Sequences a local engine runs now, per tenant (fair share of its slots).",
            labels=labels,
        )
        waiting = GaugeMetricFamily(
            "inhouse_engine_waiting",
            "Requests waiting for a local engine's slot, per tenant.",
            labels=labels,
        )
        for gauge in self._read():
            running.add_metric([gauge.model, gauge.tenant], gauge.running)
            waiting.add_metric([gauge.model, gauge.tenant], gauge.waiting)
        yield from (running, waiting)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "inhouse_requests",
            "Requests answered, by endpoint, model and HTTP status.",
            ["endpoint", "model", "status"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "inhouse_request_duration_seconds",
            "Time from request to the last byte of the answer.",
            ["endpoint", "model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._tokens = Counter(
            "inhouse_tokens",
            "Tokens processed, by model and kind (prompt or completion).",
            ["model", "kind"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "inhouse_requests_in_flight", "Requests being answered now.", registry=self.registry
        )
        self._step_seconds = Histogram(
            "inhouse_flow_step_duration_seconds",
            "Time of one flow step on one request, by flow and step.",
            ["tenant", "flow", "step"],
            buckets=STEP_BUCKETS,
            registry=self.registry,
        )
        self._step_decisions = Counter(
            "inhouse_flow_step_decisions",
            "What flow steps decided (pass, masked, changed, flagged, blocked ...).",
            ["tenant", "flow", "step", "decision"],
            registry=self.registry,
        )
        self._fleet_requests = Counter(
            "inhouse_fleet_requests",
            "Requests routed to fleet nodes: node, tier, the routing rule that chose the "
            "tier, and whether the node answered (sent) or failed and another was tried.",
            ["node", "tier", "rule", "outcome"],
            registry=self.registry,
        )

    def watch_engines(self, read: Callable[[], Iterable[EngineGauge]]) -> None:
        """Export the local engines' running and waiting requests per tenant at each scrape."""
        self.registry.register(_EngineCollector(read))

    def watch_fleet(self, read: Callable[[], Iterable[NodeGauge]]) -> None:
        """Export the fleet's nodes (availability, load) from ``read`` at each scrape."""
        self.registry.register(_FleetCollector(read))

    def observe_fleet(self, node: str, tier: str, rule: str, outcome: str) -> None:
        """A request sent to a node (``sent``), or failed there and retried (``retried``)."""
        self._fleet_requests.labels(node, tier, rule, outcome).inc()

    def observe_flow_step(
        self, tenant: str, flow: str, step: str, seconds: float, decision: str
    ) -> None:
        self._step_seconds.labels(tenant, flow, step).observe(seconds)
        self._step_decisions.labels(tenant, flow, step, decision).inc()

    def observe(
        self,
        *,
        endpoint: str,
        model: str,
        status: int,
        seconds: float,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> None:
        self._requests.labels(endpoint, model, str(status)).inc()
        self._latency.labels(endpoint, model).observe(seconds)
        if prompt_tokens:
            self._tokens.labels(model, "prompt").inc(prompt_tokens)
        if completion_tokens:
            self._tokens.labels(model, "completion").inc(completion_tokens)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
