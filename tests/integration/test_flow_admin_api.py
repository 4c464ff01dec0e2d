"""Flows through the admin API on a running gateway: validate, test on sample inputs,
apply (publish), list, show, versions, roll back; who may hide the AI label; lexicon
files confined to the lexicon directory; bodies over the limit refused."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from tests.integration.fake_upstream import FakeUpstream
from tests.integration.server import InhouseProcess

LEXICON = """version: 3
categories:
  insider: {action: flag, terms: [内幕消息, insider tip]}
"""
MAX_BODY = 64 * 1024


def broker_spec(notice: str = "AI-generated", *, visible: bool = True) -> dict[str, Any]:
    return {
        "name": "broker",
        "model": {"alias": "center", "template": "Client {desk}: {input}"},
        "pre": [
            {"type": "clean"},
            {"type": "terms", "options": {"lexicon": "finance.yaml"}},
            {"type": "refusal", "options": {"categories": ["insider"]}},
        ],
        "post": [{"type": "label", "options": {"notice": notice, "visible": visible}}],
    }


@dataclass
class World:
    server: InhouseProcess
    upstream: FakeUpstream
    developer: httpx.Client
    admin: httpx.Client
    outsider: httpx.Client
    developer_key: str


def client(server: InhouseProcess, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    directory = tmp_path_factory.mktemp("flow-admin")
    lexicons = directory / "lexicons"
    (lexicons / "bank").mkdir(parents=True)
    (lexicons / "bank" / "finance.yaml").write_text(LEXICON)
    (lexicons / "insurer").mkdir()
    (lexicons / "insurer" / "secret.yaml").write_text(LEXICON)  # another tenant's
    (directory / "secret.yaml").write_text(LEXICON)
    with FakeUpstream(reply_text="Diversify; nobody knows tomorrow's prices.") as upstream:
        server = InhouseProcess(
            directory / "data",
            builtin_model=False,
            INHOUSE_FLOWS__LEXICON_DIR=str(lexicons),
            INHOUSE_SERVER__MAX_BODY_BYTES=str(MAX_BODY),
        )
        server.cli("tenants", "create", "bank")
        server.cli("models", "add", "center", "--url", upstream.url, "--tenant", "bank")
        server.start()
        developer_key = server.new_key("bank")
        clients = [
            client(server, developer_key),
            client(server, server.new_key("bank", "tenant-admin")),
            client(server, server.new_key("insurer")),
        ]
        try:
            yield World(server, upstream, *clients, developer_key)
        finally:
            for each in clients:
                each.close()
            server.stop()


def test_validate_names_the_problem_and_lists_the_variables(world: World) -> None:
    ok = world.developer.post("/admin/flows/validate", json={"spec": broker_spec()})
    assert ok.status_code == 200, ok.text
    assert ok.json()["variables"] == ["desk"]
    bad = broker_spec()
    bad["post"].append({"type": "label", "options": {"colour": "red"}})
    refused = world.developer.post("/admin/flows/validate", json={"spec": bad})
    assert refused.status_code == 400
    assert refused.json()["error"]["message"].startswith("post.1.options.colour: Extra inputs")
    wrong_stage = {"name": "x", "model": {"alias": "center"}, "post": [{"type": "pii_mask"}]}
    refused = world.developer.post("/admin/flows/validate", json={"spec": wrong_stage})
    assert refused.status_code == 400 and "post.0" in refused.json()["error"]["message"]


def test_lexicons_outside_the_lexicon_directory_are_refused(world: World) -> None:
    spec = broker_spec()
    outside = str(world.server.data_dir.parent / "secret.yaml")
    for escape in ("../insurer/secret.yaml", "../../secret.yaml", outside):
        spec["pre"][1]["options"]["lexicon"] = escape
        for path in ("/admin/flows/validate", "/admin/tenants/bank/flows"):
            refused = world.developer.post(path, json={"spec": spec})
            assert refused.status_code == 400, (escape, path, refused.text)
            assert "lexicon directory" in refused.json()["error"]["message"]


def test_a_flow_is_tested_on_samples_without_being_published(world: World) -> None:
    samples = [
        {"input": "What should I buy?", "variables": {"desk": "retail"}},
        {"input": "给我一个内 幕 消 息", "variables": {"desk": "retail"}},
    ]
    before = len(world.upstream.received)
    answer = world.developer.post(
        "/admin/flows/test", json={"spec": broker_spec("TEST"), "inputs": samples}
    )
    assert answer.status_code == 200, answer.text
    answered, refused = answer.json()["results"]
    assert answered["output"].startswith("Diversify")
    assert answered["output"].endswith("TEST")
    steps = [t["step"] for t in answered["trace"] if "variable" not in t["details"]]
    assert steps == ["clean", "terms", "refusal", "label"]
    assert answered["usage"]["completion_tokens"] > 0
    assert refused["blocked"] == {"step": "refusal", "category": "insider"}
    assert "无法回答" in refused["output"]
    assert len(world.upstream.received) == before + 1  # the refused one never reached it
    sent = world.upstream.received[-1].body["messages"][-1]["content"]
    assert sent == "Client retail: What should I buy?"
    listed = world.developer.get("/admin/tenants/bank/flows").json()
    assert "broker" not in {flow["name"] for flow in listed}  # tested, not published
    missing_variable = world.developer.post(
        "/admin/flows/test", json={"spec": broker_spec(), "inputs": [{"input": "hi"}]}
    )
    assert missing_variable.status_code == 400
    assert missing_variable.json()["error"]["param"] == "variables"


def test_apply_publish_show_and_roll_back_through_the_api(world: World) -> None:
    for notice in ("v1", "v2"):
        applied = world.developer.post(
            "/admin/tenants/bank/flows", json={"spec": broker_spec(notice)}
        )
        assert applied.status_code == 201, applied.text
    assert applied.json()["version"] == 2 and applied.json()["published"]
    stored = applied.json()["spec"]["pre"][1]["options"]["lexicon"]
    lexicons = world.server.data_dir.parent / "lexicons"
    assert stored == str((lexicons / "bank" / "finance.yaml").resolve())
    openai_client = openai.OpenAI(
        base_url=f"{world.server.base_url}/v1", api_key=world.developer_key, max_retries=0
    )

    def published_notice() -> str:
        answer = openai_client.chat.completions.create(
            model="flow:broker",
            messages=[{"role": "user", "content": "Bonds or stocks?"}],
            metadata={"desk": "private"},
        )
        return (answer.choices[0].message.content or "").rsplit("\n", 1)[-1]

    wait_for(lambda: published_notice() == "v2")
    rolled = world.developer.post("/admin/tenants/bank/flows/broker/rollback", json={})
    assert rolled.status_code == 200 and rolled.json()["version"] == 1
    wait_for(lambda: published_notice() == "v1")
    versions = world.developer.get("/admin/tenants/bank/flows/broker/versions").json()
    assert [(v["version"], v["published"]) for v in versions] == [(1, True), (2, False)]
    shown = world.developer.get("/admin/tenants/bank/flows/broker", params={"version": 2})
    assert shown.json()["spec"]["post"][0]["options"]["notice"] == "v2"
    listed = world.developer.get("/admin/tenants/bank/flows").json()
    assert [(f["name"], f["published"], f["latest"]) for f in listed] == [("broker", 1, 2)]
    audit = world.admin.get("/admin/audit").json()["data"]
    actions = [(e["action"], e["details"].get("version")) for e in audit if "flow." in e["action"]]
    assert ("flow.rollback", 1) in actions and ("flow.apply", 2) in actions
    assert (
        world.developer.post(
            "/admin/tenants/bank/flows/broker/rollback", json={"to": 9}
        ).status_code
        == 404
    )


def test_only_a_tenant_admin_turns_the_visible_label_off(world: World) -> None:
    hidden = {"spec": broker_spec(visible=False)}
    refused = world.developer.post("/admin/tenants/bank/flows", json=hidden)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "label_requires_tenant_admin"
    applied = world.admin.post("/admin/tenants/bank/flows", json=hidden)
    assert applied.status_code == 201, applied.text
    audit = world.admin.get("/admin/audit").json()["data"]
    last_apply = next(e for e in audit if e["action"] == "flow.apply"
                      and e["details"]["version"] == applied.json()["version"])  # fmt: skip
    assert last_apply["details"]["ai_label_visible"] is False


def test_another_tenant_neither_sees_nor_changes_the_flows(world: World) -> None:
    for method, path, body in [
        ("GET", "/admin/tenants/bank/flows", None),
        ("GET", "/admin/tenants/bank/flows/broker", None),
        ("POST", "/admin/tenants/bank/flows", {"spec": broker_spec()}),
        ("POST", "/admin/tenants/bank/flows/broker/rollback", {}),
    ]:
        response = world.outsider.request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.text)
    # Tried in the outsider's own tenant: the bank's lexicon is not in its folder ...
    sample = {"input": "hi", "variables": {"desk": "x"}}
    tried = world.outsider.post(
        "/admin/flows/test", json={"spec": broker_spec(), "inputs": [sample]}
    )
    assert tried.status_code == 400, tried.text
    assert tried.json()["error"]["param"] == "lexicon"
    # ... and the bank's model does not exist there.
    no_terms = {**broker_spec(), "pre": []}
    tried = world.outsider.post("/admin/flows/test", json={"spec": no_terms, "inputs": [sample]})
    assert tried.status_code == 404 and tried.json()["error"]["code"] == "model_not_found"


def test_bodies_over_the_limit_are_refused_on_every_route(world: World) -> None:
    big = "x" * (MAX_BODY + 1)
    for path, body in [
        ("/v1/flows/broker/run", {"input": big}),
        ("/admin/flows/validate", {"spec": {"name": big}}),
        ("/admin/tenants/bank/flows", {"spec": {"name": big}}),
    ]:
        response = world.developer.post(path, content=json.dumps(body))
        assert response.status_code == 413, (path, response.text)
        assert response.json()["error"]["code"] == "payload_too_large"

    def chunks() -> Iterator[bytes]:  # no content-length: counted as it arrives
        yield b'{"input": "'
        for _ in range(MAX_BODY // 1024 + 1):
            yield b"y" * 1024
        yield b'"}'

    streamed = world.developer.post("/v1/flows/broker/run", content=chunks())
    assert streamed.status_code == 413
    schema = world.developer.get("/admin/flows/schema").json()
    titles = {v["title"] for v in schema["$defs"]["StepSpec"]["oneOf"]}
    assert "refusal" in titles


def wait_for(condition: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not seen in time"
        time.sleep(0.3)
