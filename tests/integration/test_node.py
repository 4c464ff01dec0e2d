"""`inhouse node`: the batching engine behind the OpenAI API, with a node token and status."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.integration.server import InhouseProcess

MODEL = "smollm2-135m-instruct"
TOKEN = "node-token-for-tests-0123456789"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InhouseProcess]:
    process = InhouseProcess(tmp_path_factory.mktemp("node") / "data", INHOUSE_NODE_TOKEN=TOKEN)
    process.start(180.0, "node", "--model", MODEL, "--dtype", "float32")
    try:
        yield process
    finally:
        process.stop()


def test_node_answers_with_its_token(node: InhouseProcess) -> None:
    client = openai.OpenAI(base_url=f"{node.base_url}/v1", api_key=TOKEN, max_retries=0)
    answer = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Which city is the capital of France?"}],
        temperature=0,
        extra_headers={"X-Inhouse-Priority": "high"},
    )
    assert "Paris" in (answer.choices[0].message.content or "")


def test_node_refuses_wrong_tokens_and_other_models(node: InhouseProcess) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = httpx.get(f"{node.base_url}/v1/node/status", headers=headers)
        assert response.status_code == 401
    client = openai.OpenAI(base_url=f"{node.base_url}/v1", api_key=TOKEN, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="other", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"X-Inhouse-Priority": "urgent"},
        )


def test_node_status_reports_load_and_memory(node: InhouseProcess) -> None:
    status = httpx.get(
        f"{node.base_url}/v1/node/status", headers={"Authorization": f"Bearer {TOKEN}"}
    ).json()
    assert status["models"] == [MODEL]
    assert status["ready"] is True
    assert status["precision"] == "float32"
    assert status["running"] == 0 and status["waiting"] == 0
    assert status["max_tokens_in_flight"] >= 8192
    assert status["memory_rss_bytes"] > 100 * 1024 * 1024
    assert status["memory_available_bytes"] > 0
    assert status["tokens_per_second"] > 0  # the earlier tests generated within the minute


def test_node_needs_a_token_to_start(tmp_path) -> None:  # type: ignore[no-untyped-def]
    process = InhouseProcess(tmp_path / "data", INHOUSE_NODE_TOKEN="")
    result = process.cli("node", "--model", MODEL, "--port", "1", check=False)
    assert result.returncode == 1
    assert "INHOUSE_NODE_TOKEN" in result.stderr
