"""Usage of accepted requests survives a SIGTERM right after they were answered."""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai

from tests.integration.fake_upstream import FakeUpstream
from tests.integration.remote_rows import usage_rows
from tests.integration.server import InhouseProcess


def test_sigterm_flushes_usage_of_every_answered_request(tmp_path: Path) -> None:
    server = InhouseProcess(
        tmp_path / "data", builtin_model=False, INHOUSE_METERING__FLUSH_INTERVAL_SECONDS="3600"
    )
    with FakeUpstream() as upstream:
        server.cli("models", "add", "up", "--url", upstream.url)
        server.start()
        key = server.new_key("ops")
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0)
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(
                    lambda _: client.chat.completions.create(
                        model="up", messages=[{"role": "user", "content": "x"}]
                    ),
                    range(40),
                )
            )
        assert len(answers) == 40
        assert usage_rows(server.data_dir, "up") == []  # nothing flushed yet
        # uvicorn shuts down gracefully, then re-raises the signal: exit by SIGTERM.
        assert server.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    rows = usage_rows(server.data_dir, "up")
    assert len(rows) == 40
    assert sum(r[2] for r in rows) == 40 * 4
