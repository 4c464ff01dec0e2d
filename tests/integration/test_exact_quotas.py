"""Quotas that hold exactly on a real gateway: across a restart, across keys minted from
a limited key, against engine-specific length fields, and for flow requests that a flow
blocks before any model runs."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.fake_upstream import FakeUpstream
from tests.integration.server import InhouseProcess


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(full_completions=True) as fake:
        yield fake


def gateway(directory: Path, upstream: FakeUpstream) -> InhouseProcess:
    server = InhouseProcess(directory / "data", builtin_model=False)
    server.cli("tenants", "create", "bank")
    server.cli("models", "add", "center", "--url", upstream.url)
    return server


def chat(server: InhouseProcess, key: str, **fields: object) -> httpx.Response:
    body = {"model": "center", "messages": [{"role": "user", "content": "hello"}], **fields}
    return httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def start_of_a_minute() -> None:
    """Wait until a minute has at least 10 seconds left: the test's requests share it."""
    if time.gmtime().tm_sec >= 50:
        time.sleep(61 - time.gmtime().tm_sec)


def test_a_restart_grants_only_what_is_left_of_a_daily_quota(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    server = gateway(tmp_path, upstream)
    # Each request uses 11 + 400 tokens and reserves about 620 while it runs.
    server.cli("quotas", "set", "bank", "--tokens-per-day", "1644")
    key = server.new_key("bank")
    server.start()
    try:
        assert [chat(server, key, max_tokens=400).status_code for _ in range(2)] == [200, 200]
    finally:
        server.stop()
    server.start()  # half of the day's tokens (822 of 1644) are used
    try:
        assert chat(server, key, max_tokens=400).status_code == 200
        refused = chat(server, key, max_tokens=400)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "tokens_per_day_exceeded"
    finally:
        server.stop()


def test_keys_made_with_a_limited_key_share_its_budget(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    server = gateway(tmp_path, upstream)
    parent = server.new_key("bank")
    parent_id = json.loads(server.cli("keys", "list", "--json").stdout.splitlines()[-1])["id"]
    server.cli("quotas", "set", "bank", "--key", parent_id, "--rpm", "5")
    server.start()
    try:
        children = []
        for n in range(10):
            made = httpx.post(
                f"{server.base_url}/admin/tenants/bank/keys",
                json={"name": f"app-{n}"},
                headers={"Authorization": f"Bearer {parent}"},
                timeout=30,
            )
            assert made.status_code == 201, made.text
            children.append(made.json()["key"])
        start_of_a_minute()
        statuses = [chat(server, child, max_tokens=4) for child in children]
        assert [r.status_code for r in statuses] == [200] * 5 + [429] * 5
        refusal = statuses[-1].json()["error"]
        assert refusal["code"] == "requests_per_minute_exceeded"
        assert parent_id in refusal["message"]
        assert chat(server, parent, max_tokens=4).status_code == 429  # the parent's own, too
    finally:
        server.stop()


def test_engine_length_fields_never_outgrow_the_reservation(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    server = gateway(tmp_path, upstream)
    server.cli("quotas", "set", "bank", "--tokens-per-day", "100000")
    key = server.new_key("bank")
    server.start()
    try:
        assert chat(server, key, max_tokens=10, n_predict=100_000).status_code == 200
        assert upstream.received[-1].body["n_predict"] == 10
        answer = chat(server, key, max_new_tokens=-1, options={"num_predict": 99_999})
        assert answer.status_code == 200
        sent = upstream.received[-1].body
        injected = sent["max_tokens"]  # no max_tokens given: the reservation's is sent
        assert sent["max_new_tokens"] == injected and sent["options"]["num_predict"] == injected
        refused = chat(server, key, max_tokens=10, n_predict="many")
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "n_predict"
    finally:
        server.stop()


BLOCKING_FLOW = """
name: guarded
model: {alias: center}
pre: [{type: terms, options: {terms: {gambling: {action: block, terms: [casino]}}}}]
"""


def test_a_flow_blocked_request_is_admitted_counted_and_recorded(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    server = gateway(tmp_path, upstream)
    spec = tmp_path / "guarded.yaml"
    spec.write_text(BLOCKING_FLOW)
    server.cli("flows", "apply", str(spec), "--tenant", "bank")
    server.cli("quotas", "set", "bank", "--rpm", "3")
    key = server.new_key("bank")
    server.start()
    try:
        start_of_a_minute()
        sent_before = len(upstream.received)
        blocked = [
            httpx.post(
                f"{server.base_url}/v1/chat/completions",
                json={"model": "flow:guarded", "messages": [{"role": "user", "content": text}]},
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
            )
            for text in ("best casino bonus", "casino tips", "casino again", "casino once more")
        ]
        assert [r.status_code for r in blocked] == [200, 200, 200, 429]
        assert blocked[0].json()["choices"][0]["finish_reason"] == "content_filter"
        assert blocked[-1].json()["error"]["code"] == "requests_per_minute_exceeded"
        assert len(upstream.received) == sent_before  # no model was called
        metrics = httpx.get(
            f"{server.base_url}/metrics",
            headers={"Authorization": f"Bearer {server.admin_key}"},
            timeout=10,
        ).text
        counted = re.search(
            r'inhouse_requests_total\{endpoint="chat.completions",model="flow:guarded",'
            r'status="200"\} (\S+)',
            metrics,
        )
        assert counted is not None and float(counted.group(1)) == 3
    finally:
        server.stop()
    rows = [
        json.loads(line)
        for line in server.cli(
            "usage", "--tenant", "bank", "--by", "model", "--json"
        ).stdout.splitlines()
    ]
    assert [(r["model"], r["requests"], r["total_tokens"]) for r in rows] == [
        ("flow:guarded", 3, 0)
    ]
    audit = [json.loads(line) for line in server.cli("audit", "export").stdout.splitlines()]
    inferences = [e for e in audit if e["action"] == "inference" and e["target"] == "flow:guarded"]
    assert len(inferences) == 3
    assert sum(e["action"] == "flow.block" for e in audit) == 3
