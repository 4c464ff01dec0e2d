"""Quotas and usage from the operator's side: the CLI, the admin API, and a request
refused with 429 naming the limit."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.integration.fake_upstream import FakeUpstream
from tests.integration.server import InhouseProcess

CHAT = {"model": "llm", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InhouseProcess, str]]:
    server = InhouseProcess(
        tmp_path_factory.mktemp("quotas") / "data",
        builtin_model=False,
        INHOUSE_GATEWAY__QUOTA_CACHE_SECONDS="0.2",
    )
    with FakeUpstream() as upstream:
        server.start()
        try:
            server.cli("models", "add", "llm", "--url", upstream.url)
            yield server, server.new_key("acme", "tenant-admin")
        finally:
            server.stop()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_quotas_set_and_show_on_the_command_line(served: tuple[InhouseProcess, str]) -> None:
    server, _ = served
    server.cli("tenants", "create", "globex")
    server.cli(
        "quotas", "set", "globex", "--tokens-per-month", "1_000_000", "--priority", "high",
        "--cpu", "500m", "--memory", "32Gi", "--models", "3", "--storage", "1Ti",
    )  # fmt: skip
    server.cli("quotas", "set", "globex", "--concurrency", "4", "--tokens-per-month", "none")
    shown = json.loads(server.cli("quotas", "show", "globex", "--json").stdout)
    assert shown == {
        "tokens_per_day": None,
        "tokens_per_month": None,
        "requests_per_minute": None,
        "tokens_per_minute": None,
        "concurrency": 4,
        "priority": "high",
        "cpu_limit": 0.5,
        "memory_limit": 32 * 2**30,
        "model_count": 3,
        "storage_limit": 2**40,
    }
    table = server.cli("quotas", "show", "globex").stdout
    assert "concurrency" in table and "34359738368" in table


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--rpm", "lots"), "--rpm: expected a whole number or 'none'"),
        (("--memory", "12apples"), "invalid memory_limit '12apples'"),
        (("--priority", "urgent"), "invalid priority 'urgent'"),
        ((), "nothing to set"),
    ],
)
def test_malformed_quotas_are_one_line_errors(
    served: tuple[InhouseProcess, str], args: tuple[str, ...], message: str
) -> None:
    server, _ = served
    result = server.cli("quotas", "set", "acme", *args, check=False)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_request_over_a_rate_limit_gets_429_naming_it_and_usage_adds_up(
    served: tuple[InhouseProcess, str],
) -> None:
    server, admin = served
    patched = httpx.patch(
        f"{server.base_url}/admin/tenants/acme/quotas",
        json={"requests_per_minute": 2},
        headers=auth(server.admin_key),
    )
    assert patched.status_code == 200 and patched.json()["requests_per_minute"] == 2
    time.sleep(0.5)  # past the quota cache
    with httpx.Client(base_url=server.base_url, headers=auth(admin), timeout=30) as http:
        answers = [http.post("/v1/chat/completions", json=CHAT) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        refused = answers[2]
        assert refused.json()["error"]["code"] == "requests_per_minute_exceeded"
        assert (
            "tenant 'acme' is over its requests_per_minute quota: 2 requests a minute"
            in (refused.json()["error"]["message"])
        )
        assert 1 <= int(refused.headers["retry-after"]) <= 60

        time.sleep(1.0)  # metering writes within half a second
        report = http.get("/admin/usage", params={"by": ["day", "model"]}).json()["data"]
        assert [(r["model"], r["requests"], r["total_tokens"]) for r in report] == [("llm", 2, 30)]
        exported = http.get("/admin/usage", params={"by": "key", "format": "csv"})
        assert exported.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert [(r["requests"], r["total_tokens"]) for r in rows] == [("2", "30")]

    printed = server.cli("usage", "--tenant", "acme", "--by", "model", "--csv").stdout
    assert printed.splitlines() == [
        "model,requests,failed,prompt_tokens,completion_tokens,total_tokens",
        "llm,2,0,22,8,30",
    ]
    lines = server.cli("usage", "--by", "tenant", "--json").stdout.splitlines()
    assert {json.loads(line)["tenant"]: json.loads(line)["requests"] for line in lines} == {
        "acme": 2
    }


def test_developers_manage_their_own_keys_and_admins_all_of_the_tenants(
    served: tuple[InhouseProcess, str], tmp_path: Path
) -> None:
    server, admin = served
    developer = server.new_key("acme", "developer")
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        made = http.post(
            "/admin/tenants/acme/keys", json={"name": "ci"}, headers=auth(developer)
        ).json()
        assert made["role"] == "developer" and made["key"].startswith("ih_")
        escalate = http.post(
            "/admin/tenants/acme/keys", json={"role": "tenant-admin"}, headers=auth(developer)
        )
        assert escalate.status_code == 403
        own = http.get("/admin/tenants/acme/keys", headers=auth(developer)).json()
        assert made["id"] in {k["id"] for k in own} and len(own) == 2  # itself and its key
        everything = http.get("/admin/tenants/acme/keys", headers=auth(admin)).json()
        assert len(everything) > len(own)
        revoked = http.delete(f"/admin/tenants/acme/keys/{made['id']}", headers=auth(admin))
        assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
        time.sleep(1.2)  # past the key cache
        assert http.get("/v1/models", headers=auth(made["key"])).status_code == 401


def test_keys_made_with_a_limited_key_share_its_limits_and_fall_with_it(
    served: tuple[InhouseProcess, str],
) -> None:
    server, admin = served
    developer = server.new_key("acme", "developer")
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        own = http.get("/admin/tenants/acme/keys", headers=auth(developer)).json()
        developer_id = next(k["id"] for k in own if k["created_by"] is None)
        server.cli("quotas", "set", "acme", "--key", developer_id, "--rpm", "5")
        minted = http.post("/admin/tenants/acme/keys", json={}, headers=auth(developer)).json()
        inherited = http.get(
            "/admin/tenants/acme/quotas", params={"key": minted["id"]}, headers=auth(admin)
        ).json()
        # no copy of the limit: the minted key draws on its maker's budget (see
        # test_exact_quotas.py), so minting keys cannot multiply it
        assert inherited["requests_per_minute"] is None
        revoked = http.delete(f"/admin/tenants/acme/keys/{developer_id}", headers=auth(admin))
        assert revoked.status_code == 200
        keys = {
            k["id"]: k for k in http.get("/admin/tenants/acme/keys", headers=auth(admin)).json()
        }
        assert keys[minted["id"]]["revoked_at"] is not None  # revoked with its maker
        time.sleep(1.2)  # past the key cache
        assert http.get("/v1/models", headers=auth(minted["key"])).status_code == 401


def test_admin_actions_are_in_the_audit_chain_and_tampering_is_named(
    served: tuple[InhouseProcess, str],
) -> None:
    """Runs last in this module: it edits the audit table behind the gateway's back."""
    server, _ = served
    assert "audit chain intact" in server.cli("audit", "verify").stdout
    exported = [json.loads(line) for line in server.cli("audit", "export").stdout.splitlines()]
    actions = [(e["action"], e["actor"].split(":")[0]) for e in exported]
    assert actions[:3] == [
        ("tenant.create", "system"),
        ("key.create", "system"),
        ("platform.bootstrap", "system"),
    ]
    assert ("quota.update", "cli") in actions  # inhouse quotas set
    by_api = [e for e in exported if e["actor"].startswith("key_")]  # a key, over HTTP
    assert {e["action"] for e in by_api} >= {"quota.update", "key.create", "key.revoke"}
    assert any(e["details"].get("changes") == {"requests_per_minute": 2} for e in by_api)

    engine = create_engine(f"sqlite:///{server.data_dir / 'inhouse.db'}")
    with engine.begin() as connection:
        connection.execute(text("UPDATE audit_events SET target = 'nobody' WHERE seq = 3"))
    engine.dispose()
    broken = server.cli("audit", "verify", check=False)
    assert broken.returncode == 1
    assert "the audit chain is broken at entry 3: entry 3 was changed" in broken.stderr
