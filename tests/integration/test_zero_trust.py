"""Zero trust on a running gateway: people log in with password + TOTP; every route
refuses a missing, malformed, revoked or expired credential; with admin_requires_mfa,
changes need a login, not an API key."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pyotp
import pytest

from tests.integration.server import InhouseProcess
from tests.integration.test_isolation import PUBLIC, gateway_routes

PASSWORD = "correct horse battery staple"
SESSION_SECONDS = 4


# Each person's code is accepted once per 30-second step: one person per login here,
# so that the test never waits for the next step.
PEOPLE = ("root", "mfa", "walk-1", "walk-2", "walk-3", "minter")


@dataclass(frozen=True)
class Gateway:
    server: InhouseProcess
    totp: dict[str, pyotp.TOTP]
    http: httpx.Client


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data = tmp_path_factory.mktemp("zero-trust") / "data"
    server = InhouseProcess(
        data,
        builtin_model=False,
        INHOUSE_AUTH__SESSION_TTL_SECONDS=str(SESSION_SECONDS),
        INHOUSE_AUTH__ADMIN_REQUIRES_MFA="true",
        INHOUSE_AUTH__MAX_FAILED_LOGINS="50",
    )
    password_file = data.parent / "password"
    password_file.write_text(PASSWORD + "\n")
    totp = {}
    for person in PEOPLE:
        enrolled = server.cli(
            "users", "add", person, "--tenant", "platform", "--role", "platform-admin",
            "--password-file", str(password_file), "--json",
        )  # fmt: skip
        totp[person] = pyotp.TOTP(json.loads(enrolled.stdout)["totp_secret"])
    server.start()
    try:
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            yield Gateway(server, totp, http)
    finally:
        server.stop()


def login(
    gateway: Gateway, person: str, code: str | None = None, password: str = PASSWORD
) -> httpx.Response:
    code = code or gateway.totp[person].now()
    return gateway.http.post(
        "/auth/login", json={"username": person, "password": password, "code": code}
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_login_needs_the_password_and_a_fresh_code(gateway: Gateway) -> None:
    code = gateway.totp["root"].now()
    wrong = login(gateway, "root", code, password="not the password at all")
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_credentials"
    wrong_code = "000000" if code != "000000" else "999999"
    assert login(gateway, "root", wrong_code).status_code == 401

    ok = login(gateway, "root", code)
    assert ok.status_code == 200 and ok.headers["cache-control"] == "no-store"
    token = ok.json()["token"]
    me = gateway.http.get("/auth/session", headers=bearer(token)).json()
    assert (me["kind"], me["tenant"], me["role"]) == ("session", "platform", "platform-admin")

    replayed = login(gateway, "root", code)
    assert replayed.status_code == 401, "a one-time code was accepted twice"

    exported = gateway.server.cli("audit", "export").stdout.splitlines()
    logins = [json.loads(line) for line in exported if '"auth.login"' in line]
    assert [(e["outcome"], e["details"].get("reason")) for e in logins][-4:] == [
        ("denied", "password"),
        ("denied", "one-time code"),
        ("ok", None),
        ("denied", "replayed one-time code"),
    ]


def test_changes_need_a_login_when_admin_requires_mfa(gateway: Gateway) -> None:
    admin_key = bearer(gateway.server.admin_key)
    assert gateway.http.get("/admin/tenants", headers=admin_key).status_code == 200
    refused = gateway.http.post("/admin/tenants", headers=admin_key, json={"name": "by-key"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "mfa_required"
    token = login(gateway, "mfa").json()["token"]
    created = gateway.http.post("/admin/tenants", headers=bearer(token), json={"name": "by-mfa"})
    assert created.status_code == 201, created.text


def _request(gateway: Gateway, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    url = path.replace("{tenant}", "platform").replace("{key_id}", "key_0000000000000000")
    return gateway.http.request(method, url, headers=headers)


def test_every_route_refuses_missing_bad_revoked_and_expired_credentials(
    gateway: Gateway, tmp_path: Path
) -> None:
    server = gateway.server
    revoked_key = server.new_key("walk", "tenant-admin")
    listed = server.cli("keys", "list", "--tenant", "walk", "--json").stdout.splitlines()
    server.cli("keys", "revoke", json.loads(listed[0])["id"])

    logged_out = login(gateway, "walk-1").json()["token"]
    assert gateway.http.post("/auth/logout", headers=bearer(logged_out)).status_code == 204
    revoked_by_admin = login(gateway, "walk-2").json()["token"]
    server.cli("users", "revoke-sessions", "walk-2")
    expiring = login(gateway, "walk-3").json()["token"]
    assert gateway.http.get("/auth/session", headers=bearer(expiring)).status_code == 200
    time.sleep(SESSION_SECONDS + 2)  # also past the auth cache: revocations are seen

    credentials: dict[str, dict[str, str]] = {
        "missing": {},
        "not bearer": {"Authorization": f"Basic {gateway.server.admin_key}"},
        "malformed": bearer("ih_short"),
        "unknown key": bearer("ih_" + "A" * 43),
        "revoked key": bearer(revoked_key),
        "logged-out session": bearer(logged_out),
        "revoked session": bearer(revoked_by_admin),
        "expired session": bearer(expiring),
    }
    routes = sorted(gateway_routes(tmp_path) - PUBLIC)
    assert len(routes) >= 15
    for method, path in routes:
        for label, headers in credentials.items():
            response = _request(gateway, method, path, headers)
            assert response.status_code == 401, (method, path, label, response.text)
            assert response.json()["error"]["type"] == "authentication_error"
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["x-frame-options"] == "DENY"
            assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    for method, path in sorted(PUBLIC):
        if path != "/auth/login":
            assert _request(gateway, method, path, {}).status_code == 200, path


def test_oversized_headers_are_refused_before_any_route(gateway: Gateway) -> None:
    response = gateway.http.get("/healthz", headers={"X-Padding": "a" * 40_000})
    assert response.status_code == 431
    assert response.json()["error"]["code"] == "request_headers_too_large"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert gateway.http.get("/healthz", headers={"X-Padding": "a" * 8_000}).status_code == 200


def test_a_person_logged_in_with_mfa_makes_keys_that_end_with_a_password_reset(
    gateway: Gateway,
) -> None:
    token = login(gateway, "minter").json()["token"]
    made = gateway.http.post(
        "/admin/tenants/platform/keys", json={"name": "ci"}, headers=bearer(token)
    )
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    assert gateway.http.get("/v1/models", headers=bearer(key)).status_code == 200
    password_file = gateway.server.data_dir.parent / "new-password"
    password_file.write_text("an entirely new passphrase\n")
    gateway.server.cli("users", "passwd", "minter", "--password-file", str(password_file))
    time.sleep(1.2)  # past the key cache
    assert gateway.http.get("/v1/models", headers=bearer(key)).status_code == 401
