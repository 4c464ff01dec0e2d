"""Tenants and keys in the store, on SQLite and PostgreSQL."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError, ProgrammingError

from inhouse.errors import (
    ConfigurationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
)
from inhouse.security.api_keys import ApiKeyHasher
from inhouse.store.db import Database
from inhouse.store.migrate import upgrade_to_head
from inhouse.tenancy.models import Role
from inhouse.tenancy.service import TenantService
from tests.keyrings import audit_for


@pytest.fixture
def tenants(database_url: str) -> TenantService:
    db = Database(database_url)
    upgrade_to_head(db.engine)
    return TenantService(db, ApiKeyHasher(b"test-secret"), audit_for(db))


def test_tenant_names_are_unique_and_validated(tenants: TenantService) -> None:
    tenants.create_tenant("radiology", actor="test")
    with pytest.raises(ConflictError):
        tenants.create_tenant("radiology", actor="test")
    with pytest.raises(InvalidRequestError):
        tenants.create_tenant("Bad Name!", actor="test")
    assert [t.name for t in tenants.list_tenants()] == ["radiology"]


def test_a_key_authenticates_until_revoked(tenants: TenantService) -> None:
    tenants.create_tenant("finance", actor="test")
    info, plaintext = tenants.create_key("finance", Role.DEVELOPER, "ci", actor="test")
    assert plaintext.startswith("ih_") and info.prefix in plaintext

    principal = tenants.principal_for_plaintext(plaintext)
    assert principal is not None
    assert (principal.tenant_name, principal.key_id, principal.role) == (
        "finance",
        info.id,
        Role.DEVELOPER,
    )

    tenants.revoke_key(info.id, actor="test")
    assert tenants.principal_for_plaintext(plaintext) is None
    assert not tenants.list_keys("finance")[0].active


def test_the_plaintext_is_never_stored(tenants: TenantService, database_url: str) -> None:
    tenants.create_tenant("hr", actor="test")
    _, plaintext = tenants.create_key("hr", Role.AUDITOR, actor="test")
    db = Database(database_url)
    with db.engine.connect() as connection:
        rows = connection.exec_driver_sql("SELECT key_hash, prefix FROM api_keys").all()
    assert rows and all(plaintext not in str(row) for row in rows)


def test_keys_of_unknown_tenants_and_misplaced_roles_are_refused(tenants: TenantService) -> None:
    with pytest.raises(NotFoundError):
        tenants.create_key("nobody", Role.DEVELOPER, actor="test")
    tenants.create_tenant("ops", actor="test")
    with pytest.raises(InvalidRequestError):
        tenants.create_key("ops", Role.PLATFORM_ADMIN, actor="test")
    with pytest.raises(NotFoundError):
        tenants.revoke_key("key_doesnotexist", actor="test")


def test_bootstrap_writes_the_admin_key_once_owner_only(
    tenants: TenantService, tmp_path: Path
) -> None:
    key_file = tmp_path / "admin.key"
    assert tenants.bootstrap_platform(key_file) == key_file
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    principal = tenants.principal_for_plaintext(key_file.read_text().strip())
    assert principal is not None and principal.role is Role.PLATFORM_ADMIN

    assert tenants.bootstrap_platform(tmp_path / "again.key") is None
    assert not (tmp_path / "again.key").exists()


def test_a_stale_admin_key_file_stops_bootstrap_before_anything_is_created(
    tenants: TenantService, tmp_path: Path
) -> None:
    stale = tmp_path / "admin.key"
    stale.write_text("ih_old\n")
    with pytest.raises(ConfigurationError, match="no platform tenant"):
        tenants.bootstrap_platform(stale)
    assert tenants.list_tenants() == []


def test_a_change_whose_audit_entry_cannot_be_written_does_not_happen(
    database_url: str,
) -> None:
    db = Database(database_url)
    upgrade_to_head(db.engine)
    audit = audit_for(db)
    tenants = TenantService(db, ApiKeyHasher(b"test-secret"), audit)
    tenants.create_tenant("radiology", actor="ops")
    key, _ = tenants.create_key("radiology", Role.DEVELOPER, actor="ops")
    with db.engine.begin() as connection:  # the audit table is gone: nothing can be chained
        connection.exec_driver_sql("ALTER TABLE audit_events RENAME TO audit_events_away")
    with pytest.raises(OperationalError if "sqlite" in database_url else ProgrammingError):
        tenants.create_tenant("billing", actor="ops")
    with pytest.raises((OperationalError, ProgrammingError)):
        tenants.revoke_key(key.id, actor="ops")
    with db.engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE audit_events_away RENAME TO audit_events")
    assert [t.name for t in tenants.list_tenants()] == ["radiology"]
    assert tenants.list_keys("radiology")[0].active
    assert [e.action for e in audit.entries()] == ["tenant.create", "key.create"]
    db.dispose()
