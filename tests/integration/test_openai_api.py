"""The OpenAI-compatible API, driven by the official client, on the built-in model."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.conftest import shared_models_dir
from tests.integration.server import InhouseProcess

MODEL = "smollm2-135m-instruct"
CAPITAL = [{"role": "user", "content": "Which city is the capital of France?"}]


def test_models_lists_the_builtin_model(client: openai.OpenAI) -> None:
    assert MODEL in [model.id for model in client.models.list()]


def test_chat_answer_names_paris(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model=MODEL, messages=CAPITAL, temperature=0)
    assert "Paris" in (answer.choices[0].message.content or "")
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.prompt_tokens > 10
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


def test_streamed_answer_matches_the_whole_answer(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model=MODEL, messages=CAPITAL, temperature=0)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=CAPITAL,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 2


def test_max_tokens_and_stop(client: openai.OpenAI) -> None:
    short = client.chat.completions.create(
        model=MODEL, messages=CAPITAL, temperature=0, max_tokens=3
    )
    assert short.choices[0].finish_reason == "length"
    assert short.usage is not None and short.usage.completion_tokens == 3

    stopped = client.chat.completions.create(
        model=MODEL, messages=CAPITAL, temperature=0, stop=[" is"]
    )
    assert stopped.choices[0].message.content == "The capital of France"
    assert stopped.choices[0].finish_reason == "stop"


def test_seeded_sampling_is_reproducible(client: openai.OpenAI) -> None:
    def sample(seed: int) -> str:
        answer = client.chat.completions.create(
            model=MODEL, messages=CAPITAL, temperature=1.2, top_p=0.95, seed=seed, max_tokens=12
        )
        return answer.choices[0].message.content or ""

    assert sample(7) == sample(7)


def test_completions_endpoint(client: openai.OpenAI) -> None:
    completion = client.completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=4, temperature=0
    )
    assert "Paris" in completion.choices[0].text
    streamed = client.completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=4, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == completion.choices[0].text


def test_wrong_key_is_401(gateway: InhouseProcess) -> None:
    bad = openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key="ih_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        bad.chat.completions.create(model=MODEL, messages=CAPITAL)
    assert caught.value.status_code == 401
    assert caught.value.body["type"] == "authentication_error"  # type: ignore[index]


def test_missing_key_is_401(gateway: InhouseProcess) -> None:
    response = httpx.post(f"{gateway.base_url}/v1/chat/completions", json={})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_api_key"


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=CAPITAL)
    assert caught.value.body["code"] == "model_not_found"  # type: ignore[index]
    assert caught.value.body["param"] == "model"  # type: ignore[index]


def test_malformed_json_is_400(gateway: InhouseProcess, developer_key: str) -> None:
    response = httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        content=b'{"model": "x", "messages": [',
        headers={"Authorization": f"Bearer {developer_key}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "JSON" in error["message"]


def test_invalid_field_is_400_naming_it(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=CAPITAL, temperature=5)
    assert caught.value.body["param"] == "temperature"  # type: ignore[index]


def test_over_long_prompt_is_413(client: openai.OpenAI) -> None:
    long_prompt = "tell me about the weather in Paris " * 1500  # ~10,000 tokens > 8,192
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": long_prompt}]
        )
    assert caught.value.status_code == 413
    assert caught.value.body["code"] == "context_length_exceeded"  # type: ignore[index]


def test_body_over_the_limit_is_413(gateway: InhouseProcess, developer_key: str) -> None:
    response = httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        content=b"x" * (5 * 1024 * 1024),
        headers={"Authorization": f"Bearer {developer_key}"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_health_readiness_and_metrics(gateway: InhouseProcess, client: openai.OpenAI) -> None:
    client.chat.completions.create(model=MODEL, messages=CAPITAL, temperature=0, max_tokens=2)
    assert httpx.get(f"{gateway.base_url}/healthz").json() == {"status": "ok"}
    readiness = httpx.get(f"{gateway.base_url}/readyz").json()
    assert readiness["builtin_model"] is True
    assert readiness["quota_store"] is True
    assert httpx.get(f"{gateway.base_url}/metrics").status_code == 401
    developer = {"Authorization": f"Bearer {client.api_key}"}
    assert httpx.get(f"{gateway.base_url}/metrics", headers=developer).status_code == 403
    admin = {"Authorization": f"Bearer {gateway.admin_key}"}
    metrics = httpx.get(f"{gateway.base_url}/metrics", headers=admin).text
    assert (
        'inhouse_requests_total{endpoint="chat.completions",model="smollm2-135m-instruct",status="200"}'
        in metrics
    )
    assert "inhouse_request_duration_seconds_bucket" in metrics
    assert 'inhouse_tokens_total{kind="completion",model="smollm2-135m-instruct"}' in metrics
    assert "inhouse_requests_in_flight" in metrics


def test_unknown_route_uses_the_openai_error_format(gateway: InhouseProcess) -> None:
    response = httpx.get(f"{gateway.base_url}/v1/nothing-here")
    assert response.status_code == 404
    assert "error" in response.json()


def test_a_local_weights_directory_serves_as_a_model(
    gateway: InhouseProcess, client: openai.OpenAI
) -> None:
    weights = shared_models_dir() / MODEL  # any directory of Hugging Face weights
    gateway.cli("models", "add", "team-model", str(weights))
    deadline = time.monotonic() + 10
    while "team-model" not in [m.id for m in client.models.list()]:
        assert time.monotonic() < deadline, "the new model never appeared"
        time.sleep(0.2)
    answer = client.chat.completions.create(model="team-model", messages=CAPITAL, temperature=0)
    assert "Paris" in (answer.choices[0].message.content or "")
    gateway.cli("models", "remove", "team-model")
