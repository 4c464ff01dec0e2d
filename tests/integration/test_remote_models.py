"""Remote OpenAI-compatible models: relayed bodies, streams, errors and metering."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.integration.fake_upstream import FakeUpstream
from tests.integration.remote_rows import usage_rows
from tests.integration.server import InhouseProcess

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InhouseProcess, str]]:
    server = InhouseProcess(
        tmp_path_factory.mktemp("relay") / "data",
        builtin_model=False,
        INHOUSE_UPSTREAM_TOKEN="s3cret",
    ).start()
    try:
        yield server, server.new_key("apps")
    finally:
        server.stop()


def add_model(server: InhouseProcess, name: str, upstream: FakeUpstream, *key_options: str) -> None:
    key_options = key_options or ("--api-key-env", "INHOUSE_UPSTREAM_TOKEN")
    server.cli(
        "models", "add", name, "--url", upstream.url, "--upstream-model", "big-model", *key_options
    )
    deadline = time.monotonic() + 10
    client = httpx.Client(headers={"Authorization": f"Bearer {server.admin_key}"})
    while time.monotonic() < deadline:
        ids = [m["id"] for m in client.get(f"{server.base_url}/v1/models").json()["data"]]
        if name in ids:
            return
        time.sleep(0.2)
    raise AssertionError(f"{name} never appeared in /v1/models")


def wait_for_rows(data_dir: Path, model: str, count: int) -> list[tuple[int, int, int, bool]]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = usage_rows(data_dir, model)
        # A stream's row is written when it starts (status 0) and replaced when it ends.
        if len(rows) >= count and all(row[0] != 0 for row in rows):
            return rows
        time.sleep(0.2)
    raise AssertionError(
        f"expected {count} usage rows for {model}, got {usage_rows(data_dir, model)}"
    )


def test_json_and_stream_are_relayed_with_usage(relay: tuple[InhouseProcess, str]) -> None:
    server, key = relay
    with FakeUpstream(reply_text="the answer is 42") as upstream:
        add_model(server, "center", upstream)
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0)

        answer = client.chat.completions.create(
            model="center", messages=MESSAGES, extra_body={"tools": []}
        )
        assert answer.choices[0].message.content == "the answer is 42"
        assert answer.model == "center"
        sent = upstream.received[-1]
        assert sent.body["model"] == "big-model"
        assert sent.body["tools"] == []  # fields the gateway does not interpret pass through
        assert sent.headers["Authorization"] == "Bearer s3cret"

        chunks = list(
            client.chat.completions.create(model="center", messages=MESSAGES, stream=True)
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).split() == [
            "the",
            "answer",
            "is",
            "42",
        ]
        assert all(c.usage is None for c in chunks)  # not asked for: dropped
        assert upstream.received[-1].body["stream_options"] == {"include_usage": True}

        with_usage = list(
            client.chat.completions.create(
                model="center",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert with_usage[-1].usage is not None and with_usage[-1].usage.total_tokens == 15

    rows = wait_for_rows(server.data_dir, "center", 3)
    assert rows == [(200, 11, 4, False), (200, 11, 4, True), (200, 11, 4, True)]


def test_an_upstream_key_from_a_file_is_stored_encrypted_and_sent(
    relay: tuple[InhouseProcess, str], tmp_path: Path
) -> None:
    server, key = relay
    key_file = tmp_path / "upstream.key"
    key_file.write_text("sk-vendor-7f3a9c\n")
    with FakeUpstream(reply_text="ok") as upstream:
        add_model(server, "vendor", upstream, "--api-key-file", str(key_file))
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0)
        client.chat.completions.create(model="vendor", messages=MESSAGES)
        assert upstream.received[-1].headers["Authorization"] == "Bearer sk-vendor-7f3a9c"
    database = (server.data_dir / "inhouse.db").read_bytes()
    assert b"sk-vendor-7f3a9c" not in database
    assert b"ih1:1:sm4-gcm:" in database


def test_upstream_refusal_is_relayed_and_outage_is_502(relay: tuple[InhouseProcess, str]) -> None:
    server, key = relay
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0)
    with FakeUpstream(fail_status=400) as upstream:
        add_model(server, "strict", upstream)
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="strict", messages=MESSAGES)
        assert caught.value.body["message"] == "upstream says no"  # type: ignore[index]

    with pytest.raises(openai.APIStatusError) as outage:  # the upstream is gone now
        client.chat.completions.create(model="strict", messages=MESSAGES)
    assert outage.value.status_code == 502
    assert "Traceback" not in str(outage.value.body)


def test_a_broken_stream_ends_with_an_error_event(relay: tuple[InhouseProcess, str]) -> None:
    server, key = relay
    with FakeUpstream(reply_text="one two three", break_stream=True) as upstream:
        add_model(server, "flaky", upstream)
        with httpx.stream(
            "POST",
            f"{server.base_url}/v1/chat/completions",
            json={"model": "flaky", "messages": MESSAGES, "stream": True},
            headers={"Authorization": f"Bearer {key}"},
        ) as response:
            lines = [line for line in response.iter_lines() if line.startswith("data:")]
    assert response.status_code == 200
    assert '"error"' in lines[-1]
    assert "[DONE]" not in lines[-1]


def test_an_upstream_redirect_is_not_followed(relay: tuple[InhouseProcess, str]) -> None:
    """Written as the attack: an upstream (or someone on its path) answers with a redirect
    to a collector, hoping the gateway sends the request and its key there."""
    server, key = relay
    with FakeUpstream() as collector, FakeUpstream() as upstream:
        upstream.redirect_to = f"{collector.url}/chat/completions"
        add_model(server, "redirecting", upstream)
        answer = httpx.post(
            f"{server.base_url}/v1/chat/completions",
            json={"model": "redirecting", "messages": MESSAGES},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert answer.status_code == 502
        assert len(upstream.received) == 1
        assert upstream.received[0].headers["Authorization"] == "Bearer s3cret"
        assert collector.received == []
