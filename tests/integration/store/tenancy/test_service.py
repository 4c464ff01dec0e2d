"""Tenants and keys in the store, on SQLite and PostgreSQL."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

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


@pytest.fixture
def tenants(database_url: str) -> TenantService:
    db = Database(database_url)
    upgrade_to_head(db.engine)
    return TenantService(db, ApiKeyHasher(b"test-secret"))


def test_tenant_names_are_unique_and_validated(tenants: TenantService) -> None:
    tenants.create_tenant("radiology")
    with pytest.raises(ConflictError):
        tenants.create_tenant("radiology")
    with pytest.raises(InvalidRequestError):
        tenants.create_tenant("Bad Name!")
    assert [t.name for t in tenants.list_tenants()] == ["radiology"]


def test_a_key_authenticates_until_revoked(tenants: TenantService) -> None:
    tenants.create_tenant("finance")
    info, plaintext = tenants.create_key("finance", Role.DEVELOPER, "ci")
    assert plaintext.startswith("ih_") and info.prefix in plaintext

    principal = tenants.principal_for_plaintext(plaintext)
    assert principal is not None
    assert (principal.tenant_name, principal.key_id, principal.role) == (
        "finance",
        info.id,
        Role.DEVELOPER,
    )

    tenants.revoke_key(info.id)
    assert tenants.principal_for_plaintext(plaintext) is None
    assert not tenants.list_keys("finance")[0].active


def test_the_plaintext_is_never_stored(tenants: TenantService, database_url: str) -> None:
    tenants.create_tenant("hr")
    _, plaintext = tenants.create_key("hr", Role.AUDITOR)
    db = Database(database_url)
    with db.engine.connect() as connection:
        rows = connection.exec_driver_sql("SELECT key_hash, prefix FROM api_keys").all()
    assert rows and all(plaintext not in str(row) for row in rows)


def test_keys_of_unknown_tenants_and_misplaced_roles_are_refused(tenants: TenantService) -> None:
    with pytest.raises(NotFoundError):
        tenants.create_key("nobody", Role.DEVELOPER)
    tenants.create_tenant("ops")
    with pytest.raises(InvalidRequestError):
        tenants.create_key("ops", Role.PLATFORM_ADMIN)
    with pytest.raises(NotFoundError):
        tenants.revoke_key("key_doesnotexist")


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
