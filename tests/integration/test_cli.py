"""The admin CLI: one-line errors, separate data directories, effect on a running server."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from tests.integration.server import InhouseProcess


def test_user_mistakes_are_one_line_and_exit_non_zero(tmp_path: Path) -> None:
    cli = InhouseProcess(tmp_path / "data", builtin_model=False)
    assert "First start" in cli.cli("tenants", "list").stderr  # bootstrap, said once
    for args in (
        ("keys", "create", "--tenant", "ghost"),
        ("tenants", "create", "Not Valid"),
        ("keys", "revoke", "key_nothing"),
        ("models", "add", "x"),
        ("models", "add", "x", str(tmp_path)),
        ("models", "remove", "nothing"),
    ):
        result = cli.cli(*args, check=False)
        assert result.returncode != 0, args
        assert "Traceback" not in result.stderr, args
        assert result.stderr.strip().startswith("error:"), (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)


def test_data_directories_never_meet(tmp_path: Path) -> None:
    first = InhouseProcess(tmp_path / "one", builtin_model=False)
    second = InhouseProcess(tmp_path / "two", builtin_model=False)
    first.cli("tenants", "create", "alpha")
    assert "alpha" not in second.cli("tenants", "list").stdout
    assert first.admin_key != second.admin_key


def test_a_running_server_sees_revocation_within_seconds(tmp_path: Path) -> None:
    server = InhouseProcess(tmp_path / "data", builtin_model=False).start()
    try:
        key = server.new_key("team")
        headers = {"Authorization": f"Bearer {key}"}
        assert httpx.get(f"{server.base_url}/v1/models", headers=headers).status_code == 200
        listed = server.cli("keys", "list", "--tenant", "team", "--json").stdout
        key_id = json.loads(listed.splitlines()[0])["id"]
        server.cli("keys", "revoke", key_id)
        revoked_at = time.monotonic()
        while httpx.get(f"{server.base_url}/v1/models", headers=headers).status_code == 200:
            assert time.monotonic() - revoked_at < 5, "revocation not seen within 5 s"
            time.sleep(0.1)
    finally:
        server.stop()


def test_lists_are_never_truncated(tmp_path: Path) -> None:
    cli = InhouseProcess(tmp_path / "data", builtin_model=False)
    cli.cli("tenants", "create", "a-rather-long-department-name-for-testing")
    key_id = json.loads(cli.cli("keys", "list", "--json").stdout.splitlines()[0])["id"]
    assert key_id in cli.cli("keys", "list").stdout
    assert "a-rather-long-department-name-for-testing" in cli.cli("tenants", "list").stdout


def test_audit_verify_names_the_newest_entries_deleted_after_a_checkpoint(
    tmp_path: Path,
) -> None:
    cli = InhouseProcess(tmp_path / "data", builtin_model=False)
    for name in ("alpha", "beta", "gamma"):
        cli.cli("tenants", "create", name)
    # bootstrap (tenant, key, platform.bootstrap), then the three tenants: six entries
    assert "checkpoint written: entry 6" in cli.cli("audit", "checkpoint").stdout
    assert "checkpoint: entry 6" in cli.cli("audit", "verify").stdout
    engine = create_engine(f"sqlite:///{cli.data_dir / 'inhouse.db'}")
    with engine.begin() as connection:  # someone erases the last two changes
        connection.execute(text("DELETE FROM audit_events WHERE seq >= 5"))
    engine.dispose()
    erased = cli.cli("audit", "verify", check=False)
    assert erased.returncode == 1
    assert "entries 5 to 6 are missing" in erased.stderr


def test_a_new_master_key_rewraps_every_data_key_and_replaces_the_old_one(
    tmp_path: Path,
) -> None:
    cli = InhouseProcess(tmp_path / "data", builtin_model=False)
    cli.cli("tenants", "create", "alpha")
    cli.cli("crypto", "rotate")  # two data keys, records under both
    cli.cli("tenants", "create", "beta")
    old_key = (cli.data_dir / "master.key").read_text()
    changed = cli.cli("crypto", "new-master-key")
    assert "restart every gateway" in changed.stdout
    assert (cli.data_dir / "master.key").read_text() != old_key
    assert not (cli.data_dir / "master.key.next").exists()
    assert "audit chain intact" in cli.cli("audit", "verify").stdout  # sealed details open
    assert len(cli.cli("crypto", "new-master-key", "--print").stdout.strip()) == 44
