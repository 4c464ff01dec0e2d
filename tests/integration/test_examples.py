"""The README's examples work as printed."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO
from tests.integration.server import InhouseProcess


def test_python_example_names_paris(gateway: InhouseProcess) -> None:
    env = {
        **os.environ,
        "INHOUSE_URL": f"{gateway.base_url}/v1",
        "INHOUSE_DATA_DIR": str(gateway.data_dir),
    }
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "chat.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "Paris" in result.stdout


def run_shell_block(document: str, opening: str, gateway: InhouseProcess) -> str:
    """Run the first ```bash block of a document that starts with ``opening``, against
    the gateway, from the directory holding its ``data`` directory; return its output."""
    text = (REPO / document).read_text()
    block = opening + text.split("```bash\n" + opening, 1)[1].split("```", 1)[0]
    result = subprocess.run(
        ["bash", "-c", block.replace("http://127.0.0.1:8000", gateway.base_url)],
        cwd=gateway.data_dir.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout


def test_curl_example_names_paris(gateway: InhouseProcess) -> None:
    assert "Paris" in run_shell_block("README.md", "curl", gateway)


def test_admin_api_example_of_the_tenancy_doc(gateway: InhouseProcess) -> None:
    out = run_shell_block("docs/tenancy.md", 'ADMIN="', gateway)
    assert '"name":"cardiology"' in out
    assert '"tokens_per_day":1000000' in out and '"memory_limit":34359738368' in out
    assert '"role":"tenant-admin"' in out and '"key":"ih_' in out
    assert "tenant,model,requests,failed,prompt_tokens,completion_tokens,total_tokens" in out
