"""A flood of logins on a running gateway, written as the attack: the password checks keep
to their own threads (other routes answer, surplus logins get 429 at once), and the
failures reach the audit chain at a bounded rate."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from tests.integration.server import InhouseProcess

PASSWORD = "correct horse battery staple"


def test_a_login_flood_neither_starves_other_routes_nor_floods_the_audit_chain(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    server = InhouseProcess(
        data,
        builtin_model=False,
        INHOUSE_AUTH__LOGIN_ATTEMPTS_PER_MINUTE="1000",  # one address: the attacker's many
        INHOUSE_AUTH__MAX_FAILED_LOGINS="100",
        INHOUSE_AUTH__LOGIN_WORKERS="1",
        INHOUSE_AUTH__LOGIN_QUEUE="2",
    )
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    server.cli("users", "add", "root", "--tenant", "platform", "--role", "platform-admin",
               "--password-file", str(password_file))  # fmt: skip
    server.start()
    admin = {"Authorization": f"Bearer {server.admin_key}"}

    async def flood() -> tuple[list[int], list[int]]:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
            guesses = [
                client.post(
                    "/auth/login",
                    json={"username": "root", "password": f"guess number {n:04}", "code": "123456"},
                )
                for n in range(40)
            ]
            others = [client.get("/admin/tenants", headers=admin) for _ in range(10)]
            answers = await asyncio.gather(*guesses, *others)
        return [a.status_code for a in answers[:40]], [a.status_code for a in answers[40:]]

    try:
        logins, others = asyncio.run(flood())
    finally:
        server.stop()
    assert others == [200] * 10
    assert set(logins) == {401, 429}
    assert logins.count(429) >= 20  # one thread and a line of two: the rest turned away
    audit = [json.loads(line) for line in server.cli("audit", "export").stdout.splitlines()]
    failed = [e for e in audit if e["action"] == "auth.login" and e["outcome"] == "denied"]
    assert 1 <= len(failed) <= 10  # auth.failed_login_audits_per_minute
