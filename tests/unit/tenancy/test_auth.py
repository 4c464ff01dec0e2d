from __future__ import annotations

import asyncio

import pytest

from inhouse.config import AuthSettings
from inhouse.errors import AuthenticationError
from inhouse.protocol.bearer import bearer_token
from inhouse.security.api_keys import ApiKeyHasher
from inhouse.security.audit import AuditLog
from inhouse.store.db import Database
from inhouse.store.migrate import upgrade_to_head
from inhouse.tenancy.auth import Authenticator
from inhouse.tenancy.models import Role
from inhouse.tenancy.service import TenantService
from inhouse.tenancy.users import UserService
from tests.keyrings import audit_for, keyring_for


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(tmp_path) -> Database:  # type: ignore[no-untyped-def]
    database = Database(f"sqlite:///{tmp_path / 'auth.db'}")
    upgrade_to_head(database.engine)
    return database


@pytest.fixture
def tenants(db: Database) -> TenantService:
    service = TenantService(db, ApiKeyHasher(b"k"), audit_for(db))
    service.create_tenant("lab", actor="test")
    return service


@pytest.fixture
def users(db: Database, tenants: TenantService) -> UserService:
    keyring = keyring_for(db)
    audit = AuditLog(db, b"s" * 32, keyring)
    return UserService(db, ApiKeyHasher(b"k"), keyring, audit, AuthSettings(), tenants)


def test_missing_and_malformed_credentials_are_refused(
    tenants: TenantService, users: UserService
) -> None:
    auth = Authenticator(tenants, users, ttl_seconds=2)
    for header in (None, "", "Basic abc", "Bearer "):
        with pytest.raises(AuthenticationError):
            bearer_token(header)
    for token in ("nope", "ih_unknown-key-of-the-right-shape-000000000000"):
        with pytest.raises(AuthenticationError):
            asyncio.run(auth.authenticate(token))


def test_revocation_takes_effect_when_the_cache_entry_expires(
    tenants: TenantService, users: UserService
) -> None:
    clock = ManualClock()
    auth = Authenticator(tenants, users, ttl_seconds=2.0, clock=clock)
    info, plaintext = tenants.create_key("lab", Role.DEVELOPER, actor="test")

    async def scenario() -> None:
        principal = await auth.authenticate(plaintext)
        assert principal.key_id == info.id
        tenants.revoke_key(info.id, actor="test")
        clock.now += 1.0
        await auth.authenticate(plaintext)  # still cached
        clock.now += 1.5
        with pytest.raises(AuthenticationError):
            await auth.authenticate(plaintext)

    asyncio.run(scenario())
