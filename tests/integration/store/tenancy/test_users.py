"""People's logins: password + TOTP, replay protection, lockout, sessions; on SQLite and
PostgreSQL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from sqlalchemy import select

from inhouse.config import AuthSettings
from inhouse.errors import AuthenticationError, InvalidRequestError, RateLimitError
from inhouse.security.api_keys import ApiKeyHasher
from inhouse.security.audit import AuditLog
from inhouse.security.sealed_columns import rewrap
from inhouse.store.db import Database
from inhouse.store.migrate import upgrade_to_head
from inhouse.store.tables import UserRow
from inhouse.tenancy.models import Role
from inhouse.tenancy.service import TenantService
from inhouse.tenancy.users import Enrolment, UserService
from tests.keyrings import audit_for, keyring_for

PASSWORD = "correct horse battery staple"
T0 = datetime(2026, 11, 26, 9, 0, 0, tzinfo=UTC)


@pytest.fixture
def db(database_url: str) -> Database:
    database = Database(database_url)
    upgrade_to_head(database.engine)
    return database


@pytest.fixture
def tenants(db: Database) -> TenantService:
    service = TenantService(db, ApiKeyHasher(b"k"), audit_for(db))
    service.create_tenant("bank", actor="test")
    return service


@pytest.fixture
def audit(db: Database) -> AuditLog:
    return audit_for(db)


@pytest.fixture
def users(db: Database, audit: AuditLog, tenants: TenantService) -> UserService:
    settings = AuthSettings(session_ttl_seconds=600, max_failed_logins=3, lockout_seconds=300)
    return UserService(db, ApiKeyHasher(b"k"), keyring_for(db), audit, settings, tenants)


@pytest.fixture
def alice(users: UserService) -> Enrolment:
    return users.create_user("bank", "alice", Role.TENANT_ADMIN, PASSWORD, actor="cli:root")


def code(enrolment: Enrolment, at: datetime) -> str:
    return pyotp.TOTP(enrolment.totp_secret).at(at)


def test_password_and_a_fresh_code_log_in_once(users: UserService, alice: Enrolment) -> None:
    assert alice.totp_uri.startswith("otpauth://totp/inhouse:alice?secret=")
    login = users.login("alice", PASSWORD, code(alice, T0), now=T0)
    assert login.token.startswith("ihs_") and login.expires_at == T0 + timedelta(minutes=10)
    principal = users.principal_for_session(login.token, now=T0)
    assert principal is not None
    assert (principal.tenant_name, principal.role, principal.key_id) == (
        "bank",
        Role.TENANT_ADMIN,
        alice.user.id,
    )
    assert principal.logged_in_with_mfa

    with pytest.raises(AuthenticationError):  # the same code again: a replay
        users.login("alice", PASSWORD, code(alice, T0), now=T0 + timedelta(seconds=5))
    later = T0 + timedelta(seconds=30)
    assert users.login("alice", PASSWORD, code(alice, later), now=later).token != login.token


def test_wrong_password_wrong_code_and_unknown_user_look_alike(
    users: UserService, alice: Enrolment
) -> None:
    wrong_code = "000000" if code(alice, T0) != "000000" else "111111"
    attempts = [
        ("alice", "not the password!", code(alice, T0)),
        ("alice", PASSWORD, wrong_code),
        ("alice", PASSWORD, "12ab"),
        ("mallory", PASSWORD, code(alice, T0)),
    ]
    messages = set()
    for username, password, one_time in attempts:
        with pytest.raises(AuthenticationError) as raised:
            users.login(username, password, one_time, now=T0)
        messages.add((raised.value.message, raised.value.code))
    assert len(messages) == 1


def test_a_code_from_the_previous_step_is_accepted_one_from_long_ago_is_not(
    users: UserService, alice: Enrolment
) -> None:
    users.login("alice", PASSWORD, code(alice, T0 - timedelta(seconds=30)), now=T0)
    with pytest.raises(AuthenticationError):
        users.login("alice", PASSWORD, code(alice, T0 - timedelta(minutes=5)), now=T0)


def test_failures_in_a_row_lock_the_account_even_for_the_right_credentials(
    users: UserService, alice: Enrolment, audit: AuditLog
) -> None:
    for n in range(3):
        with pytest.raises(AuthenticationError):
            users.login("alice", f"guess number {n}!", code(alice, T0), now=T0)
    right_time = T0 + timedelta(seconds=60)
    with pytest.raises(RateLimitError) as raised:
        users.login("alice", PASSWORD, code(alice, right_time), now=right_time)
    assert raised.value.code == "account_locked"
    assert 230 < raised.value.retry_after_seconds <= 300

    after_lock = T0 + timedelta(seconds=301)
    assert users.login("alice", PASSWORD, code(alice, after_lock), now=after_lock).token
    logins = [e for e in audit.entries() if e.action == "auth.login"]
    reasons = [e.as_dict()["details"].get("reason") for e in logins]
    assert reasons == ["password", "password", "password", "locked", None]
    assert logins[2].as_dict()["details"]["locked"] is True
    assert all(PASSWORD not in e.details for e in logins)


def test_unlock_lets_a_locked_user_in_at_once(users: UserService, alice: Enrolment) -> None:
    for _ in range(3):
        with pytest.raises(AuthenticationError):
            users.login("alice", "wrong password!!", code(alice, T0), now=T0)
    users.unlock("alice", actor="cli:root")
    later = T0 + timedelta(seconds=30)
    assert users.login("alice", PASSWORD, code(alice, later), now=later).token


def test_sessions_expire_and_are_revoked_by_logout_disable_and_mfa_reset(
    users: UserService, alice: Enrolment
) -> None:
    first = users.login("alice", PASSWORD, code(alice, T0), now=T0)
    assert users.principal_for_session(first.token, now=T0 + timedelta(seconds=599))
    assert users.principal_for_session(first.token, now=T0 + timedelta(seconds=600)) is None

    principal = users.principal_for_session(first.token, now=T0)
    assert principal is not None
    users.logout(principal)
    assert users.principal_for_session(first.token, now=T0) is None

    t1 = T0 + timedelta(seconds=30)
    second = users.login("alice", PASSWORD, code(alice, t1), now=t1)
    renewed = users.reset_mfa("alice", actor="cli:root")
    assert users.principal_for_session(second.token, now=t1) is None
    t2 = T0 + timedelta(seconds=60)
    with pytest.raises(AuthenticationError):  # the old authenticator app no longer works
        users.login("alice", PASSWORD, code(alice, t2), now=t2)
    third = users.login("alice", PASSWORD, code(renewed, t2), now=t2)

    users.disable("alice", actor="cli:root")
    assert users.principal_for_session(third.token, now=t2) is None
    t3 = T0 + timedelta(seconds=90)
    with pytest.raises(AuthenticationError):
        users.login("alice", PASSWORD, code(renewed, t3), now=t3)


def test_the_totp_secret_is_sealed_and_weak_passwords_are_refused(
    db: Database, users: UserService, alice: Enrolment
) -> None:
    with db.session() as session:
        row = session.scalars(select(UserRow)).one()
    assert alice.totp_secret not in row.totp_secret_sealed
    assert row.totp_secret_sealed.startswith("ih1:1:sm4-gcm:")
    assert row.password_hash.startswith("$argon2id$")
    for weak in ("short", "aaaaaaaaaaaaaaaa"):
        with pytest.raises(InvalidRequestError):
            users.create_user("bank", "bob", Role.DEVELOPER, weak, actor="cli:root")
    with pytest.raises(InvalidRequestError, match="only in the platform tenant"):
        users.create_user("bank", "carol", Role.PLATFORM_ADMIN, PASSWORD, actor="cli:root")


def test_two_logins_racing_with_one_code_get_one_session(
    users: UserService, alice: Enrolment
) -> None:
    barrier = threading.Barrier(4)

    def attempt(_: int) -> str:
        barrier.wait()
        try:
            return users.login("alice", PASSWORD, code(alice, T0), now=T0).token
        except AuthenticationError:
            return "refused"

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(attempt, range(4)))
    assert sorted(o == "refused" for o in outcomes) == [False, True, True, True]


def test_disabling_a_person_revokes_the_keys_their_sessions_made(
    users: UserService, alice: Enrolment, tenants: TenantService
) -> None:
    made, _ = tenants.create_key("bank", Role.DEVELOPER, created_by=alice.user.id, actor="test")
    child, _ = tenants.create_key("bank", Role.DEVELOPER, created_by=made.id, actor="test")
    other, _ = tenants.create_key("bank", Role.DEVELOPER, actor="test")
    users.disable("alice", actor="cli:root")
    state = {key.id: key.active for key in tenants.list_keys("bank")}
    assert state == {made.id: False, child.id: False, other.id: True}


@pytest.mark.parametrize("reset", ["password", "mfa"])
def test_resetting_a_persons_credentials_revokes_the_keys_they_made(
    users: UserService,
    alice: Enrolment,
    tenants: TenantService,
    audit: AuditLog,
    reset: str,
) -> None:
    """Written as the attack: someone who took over a person's login mints keys with it;
    the person's password (or MFA) is reset, and the keys minted must die with the login."""
    login = users.login("alice", PASSWORD, code(alice, T0), now=T0)
    minted, _ = tenants.create_key("bank", Role.DEVELOPER, created_by=alice.user.id, actor="x")
    kept_by_admin, _ = tenants.create_key("bank", Role.DEVELOPER, created_by=alice.user.id,
                                          actor="x")  # fmt: skip
    if reset == "password":
        users.set_password("alice", "a whole new passphrase", actor="cli:root")
    else:
        users.reset_mfa("alice", actor="cli:root")
    assert users.principal_for_session(login.token, now=T0) is None
    assert {k.id: k.active for k in tenants.list_keys("bank")} == {
        minted.id: False,
        kept_by_admin.id: False,
    }
    entry = audit.entries()[-1]
    assert entry.action in ("user.password", "user.reset_mfa")
    assert '"keys_revoked": 2' in entry.details and '"sessions_ended": 1' in entry.details
    assert audit.verify().ok


def test_an_admin_may_keep_the_keys_explicitly(
    users: UserService, alice: Enrolment, tenants: TenantService, audit: AuditLog
) -> None:
    kept, _ = tenants.create_key("bank", Role.DEVELOPER, created_by=alice.user.id, actor="x")
    users.set_password("alice", "a whole new passphrase", actor="cli:root", keep_keys=True)
    assert tenants.list_keys("bank")[0].active
    assert '"keys_kept": true' in audit.entries()[-1].details
    assert kept.id


def test_a_rotation_and_rewrap_covers_totp_secrets(
    db: Database, users: UserService, alice: Enrolment
) -> None:
    keyring = keyring_for(db)
    keyring.rotate()
    assert rewrap(db, keyring).rewrapped["users.totp_secret_sealed"] == 1
    later = T0 + timedelta(seconds=30)
    assert users.login("alice", PASSWORD, code(alice, later), now=later).token
