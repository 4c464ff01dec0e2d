"""Prometheus metrics of the gateway, in a registry owned by one application."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
UNRESOLVED_MODEL = "-"
STEP_BUCKETS = (0.00001, 0.00003, 0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 1)


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
