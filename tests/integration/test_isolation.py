"""Tenant isolation: every route of the API, called with tenant A's keys of each role and
aimed at tenant B's things, answers 403 or 404, and never tells B's things from
things that do not exist. A route this table does not cover fails the test."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from inhouse.api.access import all_routes
from inhouse.api.app import create_app
from inhouse.config import Settings
from tests.integration.server import InhouseProcess


@dataclass(frozen=True)
class World:
    server: InhouseProcess
    a_keys: dict[str, str]
    b_admin: str
    b_key_id: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    server = InhouseProcess(tmp_path_factory.mktemp("isolation") / "data", builtin_model=False)
    server.start()
    try:
        a_keys = {
            role: server.new_key("a", role) for role in ("developer", "tenant-admin", "auditor")
        }
        b_admin = server.new_key("b", "tenant-admin")
        server.cli("models", "add", "b-llm", "--url", "http://127.0.0.1:9/v1", "--tenant", "b")
        server.cli("quotas", "set", "b", "--tokens-per-day", "5000")
        flow = server.data_dir.parent / "b-flow.yaml"
        flow.write_text("name: b-flow\nmodel: {alias: b-llm}\npost: [{type: label}]\n")
        server.cli("flows", "apply", str(flow), "--tenant", "b")
        b_key_id = _key_id(server, "b")
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            _wait_for_model(http, b_admin, "b-llm")
            # B uses its model once (the upstream is down: a 502 that is still metered).
            http.post(
                "/v1/chat/completions",
                headers=_auth(b_admin),
                json={"model": "b-llm", "messages": [{"role": "user", "content": "hi"}]},
            )
        yield World(server, a_keys, b_admin, b_key_id)
    finally:
        server.stop()


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _key_id(server: InhouseProcess, tenant: str) -> str:
    lines = server.cli("keys", "list", "--tenant", tenant, "--json").stdout.splitlines()
    return str(json.loads(lines[0])["id"])


def _wait_for_model(http: httpx.Client, key: str, name: str) -> None:
    deadline = time.monotonic() + 10
    while name not in http.get("/v1/models", headers=_auth(key)).text:
        assert time.monotonic() < deadline
        time.sleep(0.2)


CHAT = {"model": "b-llm", "messages": [{"role": "user", "content": "hi"}]}
FLOW_BODY = {"spec": {"name": "b-flow", "model": {"alias": "b-llm"}}}

# How each route is aimed at tenant B. "{b_key}" is B's key id. Routes that list only
# the caller's own things are called plainly and their answers searched for B.
AIMED: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {
    ("POST", "/v1/chat/completions"): ("/v1/chat/completions", {"json": CHAT}),
    ("POST", "/v1/completions"): ("/v1/completions", {"json": {"model": "b-llm", "prompt": "x"}}),
    ("GET", "/metrics"): ("/metrics", {}),
    ("POST", "/admin/tenants"): ("/admin/tenants", {"json": {"name": "c"}}),
    ("GET", "/admin/tenants/{tenant}"): ("/admin/tenants/b", {}),
    ("GET", "/admin/tenants/{tenant}/keys"): ("/admin/tenants/b/keys", {}),
    ("POST", "/admin/tenants/{tenant}/keys"): ("/admin/tenants/b/keys", {"json": {}}),
    ("DELETE", "/admin/tenants/{tenant}/keys/{key_id}"): ("/admin/tenants/b/keys/{b_key}", {}),
    ("GET", "/admin/tenants/{tenant}/quotas"): ("/admin/tenants/b/quotas", {}),
    ("PATCH", "/admin/tenants/{tenant}/quotas"): (
        "/admin/tenants/b/quotas",
        {"json": {"tokens_per_day": 1}},
    ),
    ("GET", "/admin/usage"): ("/admin/usage?tenant=b", {}),
    ("GET", "/admin/audit"): ("/admin/audit?tenant=b", {}),
    ("POST", "/v1/flows/{name}/run"): ("/v1/flows/b-flow/run", {"json": {"input": "hi"}}),
    ("GET", "/admin/tenants/{tenant}/flows"): ("/admin/tenants/b/flows", {}),
    ("POST", "/admin/tenants/{tenant}/flows"): ("/admin/tenants/b/flows", {"json": FLOW_BODY}),
    ("GET", "/admin/tenants/{tenant}/flows/{name}"): ("/admin/tenants/b/flows/b-flow", {}),
    ("GET", "/admin/tenants/{tenant}/flows/{name}/versions"): (
        "/admin/tenants/b/flows/b-flow/versions",
        {},
    ),
    ("POST", "/admin/tenants/{tenant}/flows/{name}/rollback"): (
        "/admin/tenants/b/flows/b-flow/rollback",
        {"json": {"to": 1}},
    ),
    # A flow tried in the caller's own tenant, on B's model.
    ("POST", "/admin/flows/test"): (
        "/admin/flows/test",
        {"json": {**FLOW_BODY, "inputs": [{"input": "hi"}]}},
    ),
    # The fleet's nodes are the platform's: no key of another tenant changes them.
    ("POST", "/admin/nodes"): (
        "/admin/nodes",
        {
            "json": {
                "url": "http://127.0.0.1:9/v1",
                "tier": "edge",
                "kind": "openai",
                "models": ["b-llm"],
                "tenant": "b",
            }
        },
    ),
    ("DELETE", "/admin/nodes/{name}"): ("/admin/nodes/b-node", {}),
    ("POST", "/admin/nodes/{name}/approve"): ("/admin/nodes/b-node/approve", {}),
    ("POST", "/v1/node/register"): (
        "/v1/node/register",
        {
            "json": {
                "url": "http://127.0.0.1:9/v1",
                "tier": "edge",
                "models": ["b-llm"],
                "capacity": 1,
            }
        },
    ),
}
# Aimed at B through the caller's own tenant: B's key id under tenant a.
AIMED_THROUGH_OWN_TENANT: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {
    ("DELETE", "/admin/tenants/{tenant}/keys/{key_id}"): ("/admin/tenants/a/keys/{b_key}", {}),
    ("GET", "/admin/tenants/{tenant}/quotas"): ("/admin/tenants/a/quotas?key={b_key}", {}),
}
OWN_LISTINGS = {
    ("GET", "/v1/models"),
    ("GET", "/admin/tenants"),
    ("GET", "/admin/usage"),
    ("GET", "/admin/audit"),
    ("GET", "/auth/session"),
    ("GET", "/admin/nodes"),
}
# Read or check nothing of any tenant (the spec schema, validating a spec sent along).
TENANT_FREE = {("GET", "/admin/flows/schema"), ("POST", "/admin/flows/validate")}
# Acts on the credential the request carries, and on nothing else.
OWN_CREDENTIAL = {("POST", "/auth/logout")}
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
    ("POST", "/auth/login"),
}


def gateway_routes(tmp_path: Path) -> set[tuple[str, str]]:
    app = create_app(Settings(data_dir=tmp_path))
    return {
        (method, route.path)
        for route in all_routes(app.routes)
        for method in route.methods
        if method != "HEAD"
    }


def test_the_table_covers_every_route(tmp_path: Path) -> None:
    covered = set(AIMED) | OWN_LISTINGS | OWN_CREDENTIAL | PUBLIC | TENANT_FREE
    assert gateway_routes(tmp_path) == covered, "add the new route to this test's tables"


@pytest.mark.parametrize("role", ["developer", "tenant-admin", "auditor"])
def test_a_foreign_tenants_things_answer_403_or_404(world: World, role: str) -> None:
    key = world.a_keys[role]
    with httpx.Client(base_url=world.server.base_url, timeout=30, headers=_auth(key)) as http:
        for table in (AIMED, AIMED_THROUGH_OWN_TENANT):
            for (method, _), (path, kwargs) in table.items():
                url = path.format(b_key=world.b_key_id)
                response = http.request(method, url, **kwargs)
                assert response.status_code in (403, 404), (role, method, url, response.text)
                assert "error" in response.json()


@pytest.mark.parametrize("role", ["developer", "tenant-admin", "auditor"])
def test_a_foreign_tenant_is_indistinguishable_from_a_missing_one(world: World, role: str) -> None:
    key = world.a_keys[role]
    with httpx.Client(base_url=world.server.base_url, timeout=30, headers=_auth(key)) as http:
        for method, path, model in [
            ("GET", "/admin/tenants/{t}", None),
            ("GET", "/admin/tenants/{t}/quotas", None),
            ("GET", "/admin/usage?tenant={t}", None),
            ("POST", "/v1/chat/completions", "{t}-llm"),
        ]:
            answers = []
            for tenant in ("b", "zz"):
                body = None if model is None else {**CHAT, "model": model.format(t=tenant)}
                response = http.request(method, path.format(t=tenant), json=body)
                text = response.text.replace(f"'{tenant}'", "'?'").replace(f"{tenant}-llm", "?")
                answers.append((response.status_code, text))
            assert answers[0] == answers[1], (role, path)


@pytest.mark.parametrize("role", ["developer", "tenant-admin", "auditor"])
def test_own_listings_never_show_the_foreign_tenant(world: World, role: str) -> None:
    key = world.a_keys[role]
    with httpx.Client(base_url=world.server.base_url, timeout=30, headers=_auth(key)) as http:
        for method, path in OWN_LISTINGS:
            response = http.request(method, path)
            assert response.status_code in (200, 403), (role, path, response.text)
            for secret in ("b-llm", world.b_key_id, '"b"'):
                assert secret not in response.text, (role, path)


def test_logging_out_an_api_key_is_refused(world: World) -> None:
    for method, path in OWN_CREDENTIAL:
        response = httpx.request(
            method, world.server.base_url + path, headers=_auth(world.a_keys["developer"])
        )
        assert response.status_code == 400, response.text
        assert "API key, not a login session" in response.json()["error"]["message"]


def test_the_foreign_tenant_is_untouched_and_its_owner_sees_it_all(world: World) -> None:
    with httpx.Client(
        base_url=world.server.base_url, timeout=30, headers=_auth(world.b_admin)
    ) as http:
        assert http.get("/admin/tenants/b/quotas").json()["tokens_per_day"] == 5000
        keys = http.get("/admin/tenants/b/keys").json()
        assert [k["revoked_at"] for k in keys] == [None]
        assert "b-llm" in http.get("/v1/models").text
        deadline = time.monotonic() + 10  # usage is written in batches, off the request path
        while not (usage := http.get("/admin/usage", params={"by": "model"}).json()["data"]):
            assert time.monotonic() < deadline, "B's usage never reached the database"
            time.sleep(0.2)
        assert [(row["model"], row["requests"]) for row in usage] == [("b-llm", 1)]
        actions = [e["action"] for e in http.get("/admin/audit").json()["data"]]
        # B's one inference (a 502: its upstream is down) is audited too, as metadata.
        assert actions == [
            "tenant.create", "key.create", "model.add", "quota.update", "flow.apply", "inference",
        ]  # fmt: skip
