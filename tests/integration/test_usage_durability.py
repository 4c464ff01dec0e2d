"""Kill -9 of a gateway under load, then a restart: every request that got a 200 has
its usage row (the usage journal is replayed), and nothing is counted twice."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from tests.integration.fake_upstream import FakeUpstream
from tests.integration.server import InhouseProcess


def test_every_answered_request_has_its_usage_row_after_a_kill(tmp_path: Path) -> None:
    # Usage reaches the database only every 30 s: what is accepted before the kill
    # lives in the journal alone.
    server = InhouseProcess(
        tmp_path / "data", builtin_model=False, INHOUSE_METERING__FLUSH_INTERVAL_SECONDS="30"
    )
    server.start()
    with FakeUpstream(delay_seconds=0.02) as upstream:
        key = server.new_key("acme")
        server.cli("models", "add", "llm", "--url", upstream.url)
        answered: list[str] = []
        stop = threading.Event()

        def client() -> None:
            body = {
                "model": "llm",
                "messages": [{"role": "user", "content": "hi"}],
                "stream": False,
            }
            with httpx.Client(base_url=server.base_url, timeout=10) as http:
                while not stop.is_set():
                    try:
                        response = http.post(
                            "/v1/chat/completions",
                            json=body,
                            headers={"Authorization": f"Bearer {key}"},
                        )
                    except httpx.HTTPError:
                        return  # the gateway is gone
                    if response.status_code == 200:
                        answered.append(response.headers["x-request-id"])

        wait_for_model(server, key)
        with ThreadPoolExecutor(8) as pool:
            for _ in range(8):
                pool.submit(client)
            time.sleep(3)
            assert server.stop(signal.SIGKILL) == -signal.SIGKILL
            stop.set()
    assert len(answered) > 50

    server.start()  # replays the dead process's journal
    server.stop()
    assert "replaying" in server.log_path.read_text()
    rows = usage_request_ids(server.data_dir)
    assert set(answered) <= set(rows)
    assert len(rows) == len(set(rows))


def wait_for_model(server: InhouseProcess, key: str) -> None:
    deadline = time.monotonic() + 10
    headers = {"Authorization": f"Bearer {key}"}
    while '"llm"' not in httpx.get(f"{server.base_url}/v1/models", headers=headers).text:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def usage_request_ids(data_dir: Path) -> list[str]:
    engine = create_engine(f"sqlite:///{data_dir / 'inhouse.db'}")
    with engine.connect() as connection:
        ids = [row[0] for row in connection.execute(text("SELECT request_id FROM usage_records"))]
    engine.dispose()
    return ids


def test_a_stream_cut_by_a_kill_bills_what_it_sent(tmp_path: Path) -> None:
    """Written as the attack: a long stream, and the gateway killed (SIGKILL) midway, its
    usage never settled. What it sent was journalled as it went, and is billed."""
    server = InhouseProcess(
        tmp_path / "data", builtin_model=False, INHOUSE_METERING__FLUSH_INTERVAL_SECONDS="30"
    )
    server.start()
    words = " ".join(f"w{n}" for n in range(400))
    with FakeUpstream(reply_text=words, word_seconds=0.01) as upstream:
        key = server.new_key("acme")
        server.cli("models", "add", "llm", "--url", upstream.url)
        wait_for_model(server, key)
        body = {"model": "llm", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        received = 0
        with (
            httpx.Client(base_url=server.base_url, timeout=30) as http,
            http.stream(
                "POST",
                "/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {key}"},
            ) as response,
        ):
            request_id = response.headers["x-request-id"]
            for line in response.iter_lines():
                received += line.startswith("data: {")
                if received == 150:
                    assert server.stop(signal.SIGKILL) == -signal.SIGKILL
                    break
    server.start()  # replays the journal
    server.stop()
    engine = create_engine(f"sqlite:///{server.data_dir / 'inhouse.db'}")
    with engine.connect() as connection:
        status, completion = connection.execute(
            text("SELECT status_code, completion_tokens FROM usage_records WHERE request_id = :r"),
            {"r": request_id},
        ).one()
    engine.dispose()
    assert status == 0  # in progress when the process died
    assert 100 <= completion <= 150  # at most 32 tokens or a quarter second behind
