"""Encryption at rest as an operator meets it: the crypto commands, and a wrong master key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from inhouse.security.key_provider import new_master_key_text
from tests.integration.server import InhouseProcess


def versions(cli: InhouseProcess) -> dict[int, int]:
    lines = cli.cli("crypto", "status", "--json").stdout.splitlines()
    return {int(row["version"]): int(row["records"]) for row in map(json.loads, lines)}


def test_rotate_then_rewrap_moves_every_record_to_the_new_key(tmp_path: Path) -> None:
    cli = InhouseProcess(tmp_path / "data", builtin_model=False)
    for name in ("alpha", "beta", "gamma"):
        cli.cli("tenants", "create", name)
    before = versions(cli)
    assert list(before) == [1] and before[1] >= 4  # bootstrap + three tenants, all sealed

    assert "data key version 2 is now current" in cli.cli("crypto", "rotate").stdout
    status = cli.cli("crypto", "status")
    assert "sealed with older keys: run inhouse crypto rewrap" in status.stderr
    assert "2 (current)" in status.stdout

    rewrapped = cli.cli("crypto", "rewrap", "--batch-size", "2").stdout
    assert "re-encrypted under data key version 2" in rewrapped
    after = versions(cli)
    # + the entries of the rotation and of the rewrap
    assert after[1] == 0 and after[2] == sum(before.values()) + 2
    assert "audit chain intact" in cli.cli("audit", "verify").stdout
    exported = cli.cli("audit", "export").stdout.splitlines()
    actions = [json.loads(line)["action"] for line in exported]
    assert actions[-2:] == ["crypto.rotate", "crypto.rewrap"]


def test_a_wrong_master_key_fails_loudly_at_start_up(tmp_path: Path) -> None:
    data = tmp_path / "data"
    InhouseProcess(data, builtin_model=False).cli("tenants", "create", "alpha")
    key_file = data / "master.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    original = key_file.read_text()

    key_file.write_text(new_master_key_text() + "\n")
    server = InhouseProcess(data, builtin_model=False)
    serve = subprocess.run(
        [sys.executable, "-m", "inhouse", "serve", "--port", str(server.port)],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert serve.returncode == 1
    assert "does not open data key version 1" in serve.stderr
    assert "Traceback" not in serve.stderr

    key_file.unlink()  # a lost key file must not be replaced silently either
    result = server.cli("tenants", "list", check=False)
    assert result.returncode == 1 and "created just now" in result.stderr

    from_env = InhouseProcess(
        data,
        builtin_model=False,
        INHOUSE_CRYPTO__KEY_PROVIDER="env",
        INHOUSE_MASTER_KEY=original.strip(),
    )
    assert "alpha" in from_env.cli("tenants", "list").stdout  # the right key, from the env
