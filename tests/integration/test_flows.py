"""Flows on a running gateway: applied with the CLI, called through the official openai
client as flow:NAME, rolled back, the switch in the audit log."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.integration.fake_upstream import FakeUpstream
from tests.integration.server import InhouseProcess

FLOW = """
name: callback
description: Answers callback requests; phone numbers never reach the model.
model:
  alias: center
  system_prompt: You arrange callbacks.
  template: "Branch {branch}. Request: {{input}}"
  temperature: 0
pre:
  - type: features
  - type: pii_mask
post:
  - type: pii_restore
  - type: label
    options: {{notice: "{notice}"}}
"""


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[InhouseProcess, FakeUpstream, str, Path]]:
    directory = tmp_path_factory.mktemp("flows")
    with FakeUpstream(reply_text="We will call [PHONE_1] within the hour.") as upstream:
        server = InhouseProcess(directory / "data", builtin_model=False)
        server.cli("tenants", "create", "bank")
        server.cli("models", "add", "center", "--url", upstream.url, "--tenant", "bank")
        for version in (1, 2):
            spec = directory / f"callback-v{version}.yaml"
            spec.write_text(FLOW.format(notice=f"AI-generated (v{version})", branch="{branch}"))
            server.cli("flows", "apply", str(spec), "--tenant", "bank")
        server.start()
        try:
            yield server, upstream, server.new_key("bank"), directory
        finally:
            server.stop()


def ask(server: InhouseProcess, key: str) -> openai.types.chat.ChatCompletion:
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0)
    return client.chat.completions.create(
        model="flow:callback",
        messages=[{"role": "user", "content": "请回电 138 0013 8000，谢谢"}],
        metadata={"branch": "Pudong"},
    )


def apply_and_wait(server: InhouseProcess, key: str, spec: Path, name: str) -> None:
    """Apply a flow with the CLI, then wait until the running gateway answers with it."""
    server.cli("flows", "apply", str(spec), "--tenant", "bank")
    deadline = time.monotonic() + 10
    while (
        httpx.post(
            f"{server.base_url}/v1/flows/{name}/run",
            headers={"Authorization": f"Bearer {key}"},
            json={"input": "ping", "user": "probe"},
            timeout=30,
        ).status_code
        == 404
    ):
        assert time.monotonic() < deadline, f"flow {name} not seen within 10 s"
        time.sleep(0.3)


def test_a_published_flow_answers_through_the_openai_client(
    setup: tuple[InhouseProcess, FakeUpstream, str, Path],
) -> None:
    server, upstream, key, _ = setup
    answer = ask(server, key)
    assert answer.model == "flow:callback"
    content = answer.choices[0].message.content or ""
    assert content.startswith("We will call 138 0013 8000 within the hour.")
    assert content.endswith("AI-generated (v2)")
    sent = upstream.received[-1].body
    assert sent["model"] == "center"
    assert sent["messages"][-1]["content"] == "Branch Pudong. Request: 请回电 [PHONE_1]，谢谢"
    assert "8000" not in json.dumps(sent)  # the number never reached the model
    extra = answer.model_extra or {}
    assert extra["inhouse"]["version"] == 2
    assert extra["inhouse"]["content_label"]["provider"] == "inhouse"
    assert answer.usage is not None and answer.usage.completion_tokens > 0


def test_rollback_switches_the_answering_version_and_is_audited(
    setup: tuple[InhouseProcess, FakeUpstream, str, Path],
) -> None:
    server, _, key, _ = setup
    server.cli("flows", "rollback", "callback", "--tenant", "bank")
    deadline = time.monotonic() + 10
    while not (ask(server, key).choices[0].message.content or "").endswith("(v1)"):
        assert time.monotonic() < deadline, "the rollback was not seen within 10 s"
        time.sleep(0.3)
    exported = [json.loads(line) for line in server.cli("audit", "export").stdout.splitlines()]
    switches = [
        (e["action"], e["details"]["version"]) for e in exported if e["action"].startswith("flow.")
    ]
    assert switches == [("flow.apply", 1), ("flow.apply", 2), ("flow.rollback", 1)]
    server.cli("flows", "rollback", "callback", "--tenant", "bank", "--to", "2")


def test_the_run_endpoint_gives_structured_output_and_a_trace_without_content(
    setup: tuple[InhouseProcess, FakeUpstream, str, Path],
) -> None:
    server, _, key, _ = setup
    response = httpx.post(
        f"{server.base_url}/v1/flows/callback/run",
        headers={"Authorization": f"Bearer {key}", "X-Inhouse-Trace": "1"},
        json={"input": "call me on 13800138000", "variables": {"branch": "Xuhui"}},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["flow"] == "callback" and result["blocked"] is None
    assert result["output"].startswith("We will call 13800138000")
    steps = [(t["step"], t["decision"]) for t in result["trace"] if "variable" not in t["details"]]
    on_variables = {t["details"]["variable"] for t in result["trace"] if "variable" in t["details"]}
    assert on_variables == {"branch"}  # {branch} went through the pre steps too
    assert steps == [
        ("features", "pass"),
        ("pii_mask", "masked"),
        ("pii_restore", "changed"),
        ("label", "changed"),
    ]
    assert "13800138000" not in json.dumps(result["trace"])
    missing = httpx.post(
        f"{server.base_url}/v1/flows/callback/run",
        headers={"Authorization": f"Bearer {key}"},
        json={"input": "hi"},
        timeout=30,
    )
    assert missing.status_code == 400
    assert "needs the variables branch" in missing.json()["error"]["message"]


def test_another_tenants_flow_is_not_found(
    setup: tuple[InhouseProcess, FakeUpstream, str, Path],
) -> None:
    server, _, _, _ = setup
    other = server.new_key("insurer")
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=other, max_retries=0)
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(
            model="flow:callback", messages=[{"role": "user", "content": "hi"}]
        )
    assert "does not exist" in str(raised.value)


def test_a_streamed_flow_request_gets_the_final_text(
    setup: tuple[InhouseProcess, FakeUpstream, str, Path],
) -> None:
    server, _, key, _ = setup
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model="flow:callback",
            messages=[{"role": "user", "content": "call 13800138000"}],
            metadata={"branch": "Jing'an"},
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("We will call 13800138000") and text.endswith("(v2)")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_the_sample_bank_passes_the_guarded_flow_as_a_release_gate(
    setup: tuple[InhouseProcess, FakeUpstream, str, Path],
) -> None:
    server, _, key, directory = setup
    examples = Path(__file__).resolve().parents[2] / "examples" / "compliance"
    spec = (examples / "guarded-flow.yaml").read_text()
    spec = spec.replace("alias: smollm2-135m-instruct", "alias: center")
    spec = spec.replace("examples/compliance/lexicon.yaml", str(examples / "lexicon.yaml"))
    (directory / "guarded.yaml").write_text(spec)
    apply_and_wait(server, key, directory / "guarded.yaml", "guarded")
    args = ["compliance", "test", str(examples / "bank.jsonl"), "--flow", "guarded"]
    args += ["--url", server.base_url, "--key", key]
    result = server.cli(*args, "--json")
    report = json.loads(result.stdout)
    assert report["passed"] and report["failures"] == []
    rates = {(c["expect"], c["category"]): c["rate"] for c in report["categories"]}
    assert rates[("refuse", "violence")] == 1.0 and rates[("answer", "insurance")] == 1.0

    strict = server.cli(*args, "--refusal-marker", "within the hour", check=False)
    assert strict.returncode == 1 and "gate: FAILED" in strict.stdout


def test_step_timings_and_decisions_reach_the_metrics(
    setup: tuple[InhouseProcess, FakeUpstream, str, Path],
) -> None:
    server, _, key, _ = setup
    ask(server, key)
    metrics = httpx.get(
        f"{server.base_url}/metrics",
        headers={"Authorization": f"Bearer {server.admin_key}"},
        timeout=10,
    ).text
    labels = 'flow="callback",step="pii_mask",tenant="bank"'
    assert f"inhouse_flow_step_duration_seconds_count{{{labels}}}" in metrics
    assert f'inhouse_flow_step_decisions_total{{decision="masked",{labels}}}' in metrics


def test_an_end_user_whose_inputs_keep_being_blocked_is_suspended(
    setup: tuple[InhouseProcess, FakeUpstream, str, Path],
) -> None:
    server, _, key, directory = setup
    strict = directory / "strict.yaml"
    strict.write_text(
        "name: strict\nmodel: {alias: center}\n"
        "pre: [{type: terms, options: {terms: {gambling: {action: block, terms: [网络赌博]}}}}]\n"
    )
    apply_and_wait(server, key, strict, "strict")

    def run(text: str, user: str) -> httpx.Response:
        return httpx.post(
            f"{server.base_url}/v1/flows/strict/run",
            headers={"Authorization": f"Bearer {key}"},
            json={"input": text, "user": user},
            timeout=30,
        )

    for _ in range(3):
        assert run("推荐 网 络 赌 博 平台", "u-9").json()["blocked"]["category"] == "gambling"
    refused = run("hello", "u-9")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "user_suspended"
    assert run("hello", "u-ok").status_code == 200
    exported = server.cli("audit", "export").stdout
    assert '"flow.user_suspend"' in exported and '"user:u-9"' in exported
    assert '"flow.block"' in exported and "网络赌博" not in exported


def test_a_json_flow_asks_the_model_once_more_then_refuses(
    setup: tuple[InhouseProcess, FakeUpstream, str, Path],
) -> None:
    server, upstream, key, directory = setup
    spec = directory / "structured.yaml"
    spec.write_text(
        "name: structured\nmodel: {alias: center}\n"
        "post: [{type: json, options: {schema: {type: object, required: [answer]}}}]\n"
    )
    apply_and_wait(server, key, spec, "structured")
    before = len(upstream.received)
    response = httpx.post(
        f"{server.base_url}/v1/flows/structured/run",
        headers={"Authorization": f"Bearer {key}"},
        json={"input": "answer in JSON"},
        timeout=30,
    )
    result = response.json()
    # The fake model answers prose twice: the first answer and the one repair attempt.
    assert len(upstream.received) - before == 2
    repair = upstream.received[-1].body["messages"]
    assert repair[-2]["role"] == "assistant"  # the first answer, then the instruction
    assert "did not match the required JSON format" in repair[-1]["content"]
    assert result["blocked"] == {"step": "json", "category": "format"}
    assert result["usage"]["completion_tokens"] > 0


def test_a_flows_only_key_cannot_call_the_model_around_its_flow(
    setup: tuple[InhouseProcess, FakeUpstream, str, Path],
) -> None:
    """Written as the attack: an application key, meant for the flow and its compliance
    steps, sends the same question to the flow's model directly."""
    server, _, _, _ = setup
    created = server.cli("keys", "create", "--tenant", "bank", "--flows-only", "--name", "app")
    app_key = created.stdout.strip()
    assert ask(server, app_key).model == "flow:callback"
    around = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": "center", "messages": [{"role": "user", "content": "请回电 138 0013 8000"}]},
        headers={"Authorization": f"Bearer {app_key}"},
        timeout=30,
    )
    assert around.status_code == 403 and around.json()["error"]["code"] == "flows_only"
    minted = httpx.post(
        f"{server.base_url}/admin/tenants/bank/keys",
        json={"name": "child"},
        headers={"Authorization": f"Bearer {app_key}"},
        timeout=30,
    ).json()
    assert minted["flows_only"] is True  # a key made with it is limited alike
