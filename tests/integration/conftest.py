from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.integration.server import InhouseProcess


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InhouseProcess]:
    """One gateway with the built-in model for the module's read-only API tests."""
    server = InhouseProcess(tmp_path_factory.mktemp("gateway") / "data").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def developer_key(gateway: InhouseProcess) -> str:
    return gateway.new_key("qa")


@pytest.fixture
def client(gateway: InhouseProcess, developer_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key=developer_key, max_retries=0)


@pytest.fixture
def fresh_data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"
