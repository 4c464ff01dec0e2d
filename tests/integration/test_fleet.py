"""The fleet on loopback: one gateway, two `inhouse node` edge processes on the built-in
model, and a center upstream that speaks vLLM's API and metrics (a fake, since no GPU is
here). 200 requests, one edge node killed in the middle: no failed request, the dead
node ejected, the routed traffic in the metrics, one usage row per request."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.fake_vllm import FakeVllm
from tests.integration.server import InhouseProcess

MODEL = "smollm2-135m-instruct"
TOKEN = "fleet-node-token-for-tests-0123456789"
REQUESTS = 200


@dataclass
class Fleet:
    gateway: InhouseProcess
    edges: list[InhouseProcess]
    center: FakeVllm
    key: str


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    directory = tmp_path_factory.mktemp("fleet")
    edges = [
        InhouseProcess(
            directory / f"edge-{i}",
            INHOUSE_NODE_TOKEN=TOKEN,
            INHOUSE_ENGINE__THREADS="1",
            INHOUSE_ENGINE__MAX_RUNNING_SEQUENCES="8",
        )
        for i in (1, 2)
    ]
    with FakeVllm(models=("Qwen/Qwen2.5-72B-Instruct",), capacity=8, delay_seconds=0.05) as center:
        gateway = InhouseProcess(
            directory / "gateway",
            builtin_model=False,
            INHOUSE_NODE_TOKEN=TOKEN,
            INHOUSE_FLEET__POLL_INTERVAL_SECONDS="0.3",
            INHOUSE_FLEET__REGISTRY_REFRESH_SECONDS="0.5",
            INHOUSE_FLEET__FAILURE_THRESHOLD="2",
            INHOUSE_FLEET__COOLDOWN_SECONDS="60",
        )
        try:
            for edge in edges:
                edge.start(240.0, "node", "--model", MODEL)
            for i, edge in enumerate(edges, start=1):
                gateway.cli("nodes", "add", f"{edge.base_url}/v1", "--tier", "edge",
                            "--name", f"edge-{i}", "--kind", "inhouse", "--models", MODEL,
                            "--capacity", "8")  # fmt: skip
            gateway.cli("nodes", "add", center.url, "--tier", "center", "--name", "center-1",
                        "--kind", "vllm", "--models", f"{MODEL}=Qwen/Qwen2.5-72B-Instruct",
                        "--capacity", "8")  # fmt: skip
            gateway.start()
            yield Fleet(gateway, edges, center, gateway.new_key("plant"))
        finally:
            gateway.stop()
            for edge in edges:
                if edge.process is not None and edge.process.poll() is None:
                    edge.stop()


def chat(http: httpx.Client, content: str, **extra: object) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 6}
    return http.post("/v1/chat/completions", json={**body, "temperature": 0, **extra})


def metric_samples(fleet: Fleet, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = httpx.get(
        f"{fleet.gateway.base_url}/metrics",
        headers={"Authorization": f"Bearer {fleet.gateway.admin_key}"},
    ).text
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def test_requests_are_routed_by_complexity_with_the_reason_in_headers(fleet: Fleet) -> None:
    headers = {"Authorization": f"Bearer {fleet.key}"}
    with httpx.Client(base_url=fleet.gateway.base_url, headers=headers, timeout=120) as http:
        simple = chat(http, "What is the capital of France?")
        assert simple.status_code == 200, simple.text
        assert simple.headers["X-Inhouse-Tier"] == "edge"
        assert simple.headers["X-Inhouse-Node"] in ("edge-1", "edge-2")
        assert simple.headers["X-Inhouse-Route-Reason"].startswith("default=edge")
        assert "Paris" in simple.json()["choices"][0]["message"]["content"]
        code = chat(http, "Write Python code that parses a CSV file.")
        assert code.headers["X-Inhouse-Node"] == "center-1"
        assert code.headers["X-Inhouse-Route-Reason"].startswith("task=code")
        sent = fleet.center.received[-1].body
        assert sent["model"] == "Qwen/Qwen2.5-72B-Instruct"  # the node's own name for it
        hinted = http.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]},
            headers={"X-Inhouse-Tier": "center"},
        )
        assert hinted.headers["X-Inhouse-Node"] == "center-1"
        assert hinted.headers["X-Inhouse-Route-Reason"].startswith("hint=center")
        bad = http.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]},
            headers={"X-Inhouse-Tier": "moon"},
        )
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "X-Inhouse-Tier"


def test_killing_an_edge_node_under_load_fails_no_request(fleet: Fleet) -> None:
    headers = {"Authorization": f"Bearer {fleet.key}"}
    before = metric_samples(fleet, "inhouse_fleet_requests_total")
    time.sleep(1.5)  # earlier requests' usage is flushed (every 0.5 s) before counting
    usage_before = requests_metered(fleet)
    done = threading.Event()
    statuses: list[int] = []
    nodes: list[str] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        prompt = "Write SQL code for a report." if i % 4 == 0 else f"Say the number {i}."
        with httpx.Client(base_url=fleet.gateway.base_url, headers=headers, timeout=120) as http:
            response = chat(http, prompt, user=f"user-{i}")
        with lock:
            statuses.append(response.status_code)
            nodes.append(response.headers.get("X-Inhouse-Node", "?"))
            if len(statuses) == REQUESTS // 3:
                done.set()

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(one, i) for i in range(REQUESTS)]
        assert done.wait(300), "the first third of the requests did not finish"
        victim = fleet.edges[0]
        assert victim.process is not None
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(10)
        for future in futures:
            future.result()
    assert statuses.count(200) == REQUESTS, sorted(set(statuses))
    assert nodes.count("center-1") >= REQUESTS // 4  # every fourth asks for code
    assert "edge-2" in nodes

    deadline = time.monotonic() + 10  # ejected: the next polls fail too
    while (
        metric_samples(fleet, "inhouse_fleet_node_available").get(
            (("node", "edge-1"), ("tier", "edge"))
        )
        != 0.0
    ):
        assert time.monotonic() < deadline, "the killed node was not ejected"
        time.sleep(0.3)
    after = metric_samples(fleet, "inhouse_fleet_requests_total")

    def sent(node: str) -> float:
        return sum(
            value - before.get(labels, 0.0)
            for labels, value in after.items()
            if dict(labels)["node"] == node and dict(labels)["outcome"] == "sent"
        )

    assert sent("center-1") == nodes.count("center-1")
    assert sent("edge-2") == nodes.count("edge-2")
    assert sum(sent(n) for n in ("edge-1", "edge-2", "center-1")) == REQUESTS
    available = metric_samples(fleet, "inhouse_fleet_node_available")
    assert available[(("node", "edge-2"), ("tier", "edge"))] == 1.0

    # Exactly one usage row per request.
    deadline = time.monotonic() + 15
    while (metered := requests_metered(fleet) - usage_before) < REQUESTS:
        assert time.monotonic() < deadline, f"usage rows: {metered}"
        time.sleep(0.3)
    time.sleep(1.0)  # a duplicate would arrive in the next flush
    assert requests_metered(fleet) - usage_before == REQUESTS


def requests_metered(fleet: Fleet) -> int:
    rows = httpx.get(
        f"{fleet.gateway.base_url}/admin/usage",
        params={"tenant": "plant", "by": "model"},
        headers={"Authorization": f"Bearer {fleet.gateway.admin_key}"},
    ).json()["data"]
    return sum(int(row["requests"]) for row in rows)


def test_a_failing_center_hands_streams_and_calls_to_the_other_tier(fleet: Fleet) -> None:
    headers = {"Authorization": f"Bearer {fleet.key}", "X-Inhouse-Tier": "center"}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    fleet.center.fail_status = 500
    try:
        with httpx.Client(base_url=fleet.gateway.base_url, headers=headers, timeout=120) as http:
            # The stream first, while the center's breaker is still closed: it is sent
            # there, fails before any byte, and is answered by an edge node.
            with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as s:
                assert s.status_code == 200
                assert s.headers["X-Inhouse-Tier"] == "edge"
                events = [line for line in s.iter_lines() if line.startswith("data:")]
            assert events[-1] == "data: [DONE]"
            assert not any('"error"' in event for event in events)
            answered = http.post("/v1/chat/completions", json=body)
            assert answered.status_code == 200, answered.text
            assert answered.headers["X-Inhouse-Tier"] == "edge"
            reason = answered.headers["X-Inhouse-Route-Reason"]
            assert reason == "hint=center; fallback_tier=edge"
    finally:
        fleet.center.fail_status = None
    retried = metric_samples(fleet, "inhouse_fleet_requests_total")
    center_retries = sum(
        value
        for labels, value in retried.items()
        if dict(labels)["node"] == "center-1" and dict(labels)["outcome"] == "retried"
    )
    # The stream was sent there and retried; the call too, unless the failing polls
    # had ejected the center by then.
    assert center_retries >= 1
