"""``inhouse nodes add|list|remove`` against fake nodes, and the same registry over HTTP:
``/admin/nodes`` and a node's self-registration at ``POST /v1/node/register``."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from inhouse.config import GatewaySettings
from inhouse.node.registration import Registrar, Registration, register_url
from inhouse.protocol.types import Tier
from tests.integration.fake_vllm import FakeVllm
from tests.integration.server import InhouseProcess, free_port

TOKEN = "fleet-token-for-tests-0123456789"


def cli(tmp_path: Path, **env: str) -> InhouseProcess:
    return InhouseProcess(
        tmp_path / "data",
        builtin_model=False,
        INHOUSE_NODE_TOKEN=TOKEN,
        INHOUSE_FLEET__SELF_REGISTRATION="true",
        **env,
    )


def listed(process: InhouseProcess) -> dict[str, dict[str, str]]:
    lines = process.cli("nodes", "list", "--json").stdout.splitlines()
    return {row["name"]: row for row in map(json.loads, lines)}


def one_line_error(result: object) -> str:
    stderr = getattr(result, "stderr", "").strip()
    assert getattr(result, "returncode", 0) == 1, stderr
    assert "Traceback" not in stderr
    assert stderr.startswith("error:") and len(stderr.splitlines()) == 1, stderr
    return stderr


def test_add_detects_vllm_and_asks_it_for_its_models_with_the_token(tmp_path: Path) -> None:
    process = cli(tmp_path)
    with FakeVllm(models=("Qwen/Qwen2.5-7B-Instruct", "qwen-lora"), token=TOKEN) as vllm:
        added = process.cli(
            "nodes",
            "add",
            vllm.url,
            "--tier",
            "edge",
            "--memory",
            "80Gi",
            "--label",
            "site=shanghai",
            "--label",
            "rack=r12",
        )
    assert "detected kind: vllm" in added.stdout
    assert "models from the node: Qwen/Qwen2.5-7B-Instruct, qwen-lora" in added.stdout
    name = f"127.0.0.1-{vllm.port}"
    node = listed(process)[name]
    assert node == {
        "name": name,
        "url": vllm.url,
        "tier": "edge",
        "kind": "vllm",
        "models": "Qwen/Qwen2.5-7B-Instruct,qwen-lora",
        "capacity": "16",
        "memory": str(80 * 2**30),
        "labels": "site=shanghai,rack=r12",
        "tenant": "(all)",
        "fallback": "no",
        "approved": "yes",
    }
    table = process.cli("nodes", "list").stdout
    assert name in table and "Qwen/Qwen2.5-7B-Instruct" in table

    assert process.cli("nodes", "remove", name).stdout.strip() == f"removed node {name}"
    assert listed(process) == {}
    one_line_error(process.cli("nodes", "remove", name, check=False))


def test_add_detects_any_other_openai_server_and_keeps_the_given_options(tmp_path: Path) -> None:
    process = cli(tmp_path, INHOUSE_NODE_TOKEN_GPU="llama-token")
    process.cli("tenants", "create", "bank")
    with FakeVllm(models=("llama-3-8b",), token="llama-token", serve_metrics=False) as server:
        added = process.cli(
            "nodes",
            "add",
            f"{server.base_url}/",
            "--tier",
            "center",
            "--name",
            "llama-1",
            "--models",
            "llama=llama-3-8b,chat",
            "--token-env",
            "INHOUSE_NODE_TOKEN_GPU",
            "--capacity",
            "4",
            "--cost-per-1k",
            "0.002",
            "--fallback",
            "--tenant",
            "bank",
        )
        assert server.received == []  # asked, never sent a request
    assert "detected kind: openai" in added.stdout
    assert "does not list chat" in added.stderr  # a model the node does not list: a warning
    node = listed(process)["llama-1"]
    assert (node["kind"], node["tier"], node["models"]) == (
        "openai",
        "center",
        "llama=llama-3-8b,chat",
    )
    assert (node["capacity"], node["tenant"], node["fallback"]) == ("4", "bank", "yes")
    assert node["url"] == server.url


def test_an_unreachable_node_is_registered_only_when_kind_and_models_are_given(
    tmp_path: Path,
) -> None:
    process = cli(tmp_path)
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"  # nothing listens there
    for args in ((), ("--kind", "vllm"), ("--models", "m")):
        stderr = one_line_error(
            process.cli("nodes", "add", url, "--tier", "edge", *args, check=False)
        )
        assert "cannot ask the node" in stderr
    assert listed(process) == {}
    added = process.cli("nodes", "add", url, "--tier", "edge", "--kind", "vllm", "--models", "m")
    assert "warning: the node at" in added.stderr and "registered anyway" in added.stderr
    assert listed(process)[f"127.0.0.1-{port}"]["kind"] == "vllm"


def test_mistakes_are_one_line_errors(tmp_path: Path) -> None:
    process = cli(tmp_path)
    with FakeVllm(token=TOKEN) as vllm:
        process.cli("nodes", "add", vllm.url, "--tier", "edge", "--name", "gpu")
        for args, says in [
            (("--name", "gpu"), "already exists"),
            (("--name", "other"), "already registered as node 'gpu'"),
            (("--token-env", "INHOUSE_SECRET_KEY", "--name", "x"), "may not be sent upstream"),
            (("--memory", "lots", "--name", "x"), "invalid memory"),
            (("--label", "novalue", "--name", "x"), "key=value"),
            (("--capacity", "0", "--name", "x"), "capacity"),
            (("--tenant", "ghost", "--name", "x"), "tenant 'ghost' does not exist"),
        ]:
            stderr = one_line_error(
                process.cli("nodes", "add", vllm.url, "--tier", "edge", *args, check=False)
            )
            assert says in stderr, (args, stderr)
        vllm.token = "another-token"  # the node refuses ours: say so instead of guessing
        stderr = one_line_error(
            process.cli("nodes", "add", vllm.url, "--tier", "edge", "--name", "y", check=False)
        )
        assert "401" in stderr and "token" in stderr
    credentials = "http://user:s3cret@127.0.0.1:9/v1"
    stderr = one_line_error(process.cli("nodes", "add", credentials, "--tier", "edge", check=False))
    assert "s3cret" not in stderr and "credentials" in stderr
    assert process.cli("nodes", "add", "http://h/v1", "--tier", "middle", check=False).returncode
    assert list(listed(process)) == ["gpu"]


# -- over HTTP -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InhouseProcess]:
    data = tmp_path_factory.mktemp("nodes-api") / "data"
    server = InhouseProcess(
        data, builtin_model=False, INHOUSE_NODE_TOKEN=TOKEN, INHOUSE_FLEET__SELF_REGISTRATION="true"
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_admin_api_adds_lists_and_removes_nodes(gateway: InhouseProcess) -> None:
    admin = bearer(gateway.admin_key)
    body = {
        "url": "http://10.1.2.3:8000",
        "tier": "center",
        "kind": "vllm",
        "models": {"qwen-72b": "Qwen/Qwen2.5-72B-Instruct"},
        "memory": "80Gi",
        "cost_per_1k": 0.01,
        "labels": {"site": "dc-1"},
    }
    with httpx.Client(base_url=gateway.base_url, timeout=30) as http:
        created = http.post("/admin/nodes", headers=admin, json=body)
        assert created.status_code == 201, created.text
        node = created.json()
        assert node["name"] == "10.1.2.3-8000" and node["url"] == "http://10.1.2.3:8000/v1"
        assert node["memory_bytes"] == 80 * 2**30 and node["cost_per_1k_tokens"] == 0.01
        assert node["token_env"] == "INHOUSE_NODE_TOKEN" and node["tenant"] is None
        assert [n["name"] for n in http.get("/admin/nodes", headers=admin).json()] == [
            "10.1.2.3-8000"
        ]
        again = http.post("/admin/nodes", headers=admin, json=body)
        assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
        for change, param in [
            ({"capacity": 0}, "capacity"),
            ({"tier": "middle"}, "tier"),
            ({"token_env": "INHOUSE_MASTER_KEY"}, "token_env"),
            ({"url": "http://u:p@h/v1"}, "url"),
            ({"models": []}, "models"),
            ({"surprise": 1}, "surprise"),
        ]:
            refused = http.post("/admin/nodes", headers=admin, json={**body, **change})
            assert refused.status_code == 400, (change, refused.text)
            assert refused.json()["error"]["param"] == param, refused.text
        removed = http.delete("/admin/nodes/10.1.2.3-8000", headers=admin)
        assert removed.status_code == 200 and removed.json()["name"] == "10.1.2.3-8000"
        gone = http.delete("/admin/nodes/10.1.2.3-8000", headers=admin)
        assert gone.status_code == 404 and gone.json()["error"]["type"] == "invalid_request_error"
        actions = [e["action"] for e in http.get("/admin/audit", headers=admin).json()["data"]]
        assert actions[-2:] == ["node.add", "node.remove"]


def test_a_tenants_keys_cannot_see_or_change_nodes(gateway: InhouseProcess) -> None:
    for role in ("tenant-admin", "auditor"):
        key = bearer(gateway.new_key("team", role))
        with httpx.Client(base_url=gateway.base_url, timeout=30, headers=key) as http:
            assert http.get("/admin/nodes").status_code == 403
            assert http.delete("/admin/nodes/x").status_code == 403
            node = {"url": "http://h", "tier": "edge", "models": ["m"], "capacity": 1}
            refused = http.post("/v1/node/register", json=node)
            assert refused.status_code == 403, refused.text
            assert refused.json()["error"]["code"] == "insufficient_permissions"


def test_a_node_registers_itself_with_the_fleet_token(gateway: InhouseProcess) -> None:
    body = {
        "url": "http://10.9.9.9:9000",
        "tier": "edge",
        "models": ["small"],
        "capacity": 32,
        "memory_bytes": 2**34,
        "name": "edge-9",
    }
    with httpx.Client(base_url=gateway.base_url, timeout=30) as http:
        first = http.post("/v1/node/register", headers=bearer(TOKEN), json=body)
        assert first.status_code == 200, first.text
        assert (first.json()["name"], first.json()["kind"]) == ("edge-9", "inhouse")
        beat = http.post("/v1/node/register", headers=bearer(TOKEN), json={**body, "capacity": 8})
        assert beat.json()["id"] == first.json()["id"] and beat.json()["capacity"] == 8
        for headers, code in [
            ({}, "missing_api_key"),
            (bearer("not-the-fleet-token-0123456789"), "invalid_node_token"),
            (bearer("ih_" + "A" * 43), "invalid_api_key"),
            ({"Authorization": f"Basic {TOKEN}"}, "invalid_api_key"),
        ]:
            refused = http.post("/v1/node/register", headers=headers, json=body)
            assert refused.status_code == 401, refused.text
            assert refused.json()["error"]["type"] == "authentication_error"
            assert refused.json()["error"]["code"] == code
        bad = http.post("/v1/node/register", headers=bearer(TOKEN), json={**body, "capacity": 0})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "capacity"
    node = listed(gateway)["edge-9"]
    assert (node["kind"], node["capacity"], node["models"]) == ("inhouse", "8", "small")


def test_without_a_node_token_self_registration_is_off(tmp_path: Path) -> None:
    server = InhouseProcess(tmp_path / "data", builtin_model=False, INHOUSE_NODE_TOKEN="")
    server.start()
    try:
        refused = httpx.post(
            f"{server.base_url}/v1/node/register",
            headers=bearer(TOKEN),
            json={"url": "http://h", "tier": "edge", "models": ["m"], "capacity": 1},
        )
    finally:
        server.stop()
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "node_registration_disabled"


def test_a_nodes_registrar_registers_and_retries_failures_without_stopping(
    gateway: InhouseProcess, caplog: pytest.LogCaptureFixture
) -> None:
    def registration(token: str, name: str) -> Registration:
        return Registration(
            gateway_url=gateway.base_url,
            advertise_url=f"http://{name}:9000/v1",
            tier=Tier.CENTER,
            model="big",
            token=token,
            name=name,
            heartbeat_seconds=0.5,
        )

    async def main() -> None:
        good = Registrar(
            registration(TOKEN, "center-7"),
            GatewaySettings(),
            ready=lambda: True,
            capacity=lambda: 8,
        )
        bad = Registrar(
            registration("wrong-token-0123456789", "center-8"),
            GatewaySettings(),
            ready=lambda: True,
            capacity=lambda: 8,
        )
        good.start()
        bad.start()
        try:
            await asyncio.wait_for(good.registered.wait(), 20)
            await asyncio.sleep(1.0)  # a heartbeat or two, and the bad one's retries
            assert not bad.registered.is_set()
        finally:
            await good.close()
            await bad.close()

    with caplog.at_level(logging.INFO, logger="inhouse.node.registration"):
        asyncio.run(main())
    nodes = listed(gateway)
    assert nodes["center-7"]["tier"] == "center" and nodes["center-7"]["capacity"] == "8"
    assert "center-8" not in nodes
    messages = [record.getMessage() for record in caplog.records]
    assert sum("registered with the gateway" in m for m in messages) == 1, messages
    assert any("cannot register" in m and "401" in m for m in messages), messages
    assert register_url("http://gw:8000/v1/") == "http://gw:8000/v1/node/register"


def test_self_registration_is_off_unless_the_gateway_accepts_it(tmp_path: Path) -> None:
    server = InhouseProcess(tmp_path / "data", builtin_model=False, INHOUSE_NODE_TOKEN=TOKEN)
    server.start()
    try:
        url = f"{server.base_url}/v1/node/register"
        body = {"url": "http://h", "tier": "edge", "models": ["m"], "capacity": 1}
        refused = httpx.post(url, headers=bearer(TOKEN), json=body)
        wrong = httpx.post(url, headers=bearer("x" * 32), json=body)
        operator = httpx.post(url, headers=bearer(server.admin_key), json=body)
    finally:
        server.stop()
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "node_registration_disabled"
    assert wrong.status_code == 401  # a wrong token is still told apart from a right one
    assert operator.status_code == 200, operator.text  # an operator's key registers anyway
