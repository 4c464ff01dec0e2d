"""The local engine's bounds: a full waiting line answers 429, a client that goes away
frees its slot."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.server import InhouseProcess

MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def one_slot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InhouseProcess, str]]:
    server = InhouseProcess(
        tmp_path_factory.mktemp("one-slot") / "data",
        INHOUSE_ENGINE__MAX_RUNNING_SEQUENCES="1",
        INHOUSE_ENGINE__MAX_WAITING_REQUESTS="0",
    ).start()
    try:
        yield server, server.new_key("lab")
    finally:
        server.stop()


def long_stream(server: InhouseProcess, key: str) -> dict[str, object]:
    return {
        "method": "POST",
        "url": f"{server.base_url}/v1/chat/completions",
        "json": {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Write a long story about a cat."}],
            "stream": True,
            "max_tokens": 1000,
            "temperature": 0,
        },
        "headers": {"Authorization": f"Bearer {key}"},
    }


def short_request(server: InhouseProcess, key: str) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )


def test_full_engine_answers_429_with_retry_after(one_slot: tuple[InhouseProcess, str]) -> None:
    server, key = one_slot
    with httpx.Client(timeout=60) as client, client.stream(**long_stream(server, key)) as running:  # type: ignore[arg-type]
        lines = running.iter_lines()
        next(line for line in lines if '"content"' in line and '""' not in line)
        refused = short_request(server, key)
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["error"]["code"] == "engine_overloaded"


def wait_until_free(server: InhouseProcess, key: str) -> None:
    # 1,000 tokens take over a minute here: a slot freed within 15 s was freed by the
    # disconnect, with room for a slow, shared machine.
    deadline = time.monotonic() + 15
    while (status := short_request(server, key).status_code) == 429:
        assert time.monotonic() < deadline, "the slot was never freed"
        time.sleep(0.1)
    assert status == 200


def test_a_disconnected_stream_frees_its_slot(
    one_slot: tuple[InhouseProcess, str], tmp_path: Path
) -> None:
    server, key = one_slot
    wait_until_free(server, key)
    with httpx.Client(timeout=60) as client, client.stream(**long_stream(server, key)) as running:  # type: ignore[arg-type]
        assert running.status_code == 200
        next(line for line in running.iter_lines() if '"content"' in line)
    # The client is gone after one chunk; the slot must be free long before the
    # 1,000 tokens it asked for could have been generated.
    wait_until_free(server, key)
