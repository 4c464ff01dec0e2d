"""Quotas in the store (SQLite and PostgreSQL), quantities, the request-path cache."""

from __future__ import annotations

import asyncio

import pytest

from inhouse.errors import InvalidRequestError, NotFoundError, QuotaExceededError
from inhouse.registry.models import ModelRegistry, TenantOwner
from inhouse.security.api_keys import ApiKeyHasher
from inhouse.store.db import Database
from inhouse.store.migrate import upgrade_to_head
from inhouse.tenancy.models import Principal, Role
from inhouse.tenancy.quotas import (
    LimitsCache,
    PriorityClass,
    Quota,
    QuotaService,
    parse_bytes,
    parse_changes,
    parse_cpu,
)
from inhouse.tenancy.service import TenantService
from tests.keyrings import audit_for, keyring_for


@pytest.fixture
def stores(database_url: str) -> tuple[Database, TenantService, QuotaService]:
    db = Database(database_url)
    upgrade_to_head(db.engine)
    return (
        db,
        TenantService(db, ApiKeyHasher(b"k" * 32), audit_for(db)),
        QuotaService(db, audit_for(db)),
    )


def test_set_changes_only_the_named_limits_and_none_removes_one(
    stores: tuple[Database, TenantService, QuotaService],
) -> None:
    _, tenants, quotas = stores
    tenants.create_tenant("acme", actor="test")
    assert quotas.get("acme") == Quota()
    quotas.update("acme", {"tokens_per_day": 1000, "priority": PriorityClass.HIGH}, actor="test")
    quotas.update(
        "acme", parse_changes({"memory_limit": "32Gi", "cpu_limit": "500m"}), actor="test"
    )
    quota = quotas.update("acme", {"tokens_per_day": None, "concurrency": 4}, actor="test")
    assert quota == quotas.get("acme")
    assert quota.tokens_per_day is None
    assert quota.priority is PriorityClass.HIGH
    assert (quota.memory_limit, quota.cpu_limit, quota.concurrency) == (32 * 2**30, 0.5, 4)


def test_a_key_has_its_own_quota_and_both_apply(
    stores: tuple[Database, TenantService, QuotaService],
) -> None:
    _, tenants, quotas = stores
    tenant = tenants.create_tenant("acme", actor="test")
    key, _ = tenants.create_key("acme", Role.DEVELOPER, actor="test")
    quotas.update("acme", {"tokens_per_day": 1000}, actor="test")
    quotas.update("acme", {"requests_per_minute": 5}, key_id=key.id, actor="test")
    limits = quotas.limits(tenant.id, key.id)
    assert limits.tenant.tokens_per_day == 1000
    assert limits.key.requests_per_minute == 5
    other, _ = tenants.create_key("acme", Role.DEVELOPER, actor="test")
    assert quotas.limits(tenant.id, other.id).key == Quota()


def test_a_key_of_another_tenant_cannot_carry_this_tenants_quota(
    stores: tuple[Database, TenantService, QuotaService],
) -> None:
    _, tenants, quotas = stores
    tenants.create_tenant("acme", actor="test")
    tenants.create_tenant("globex", actor="test")
    globex_key, _ = tenants.create_key("globex", Role.DEVELOPER, actor="test")
    with pytest.raises(NotFoundError):
        quotas.update("acme", {"concurrency": 1}, key_id=globex_key.id, actor="test")
    with pytest.raises(NotFoundError):
        quotas.get("nobody")


def test_negative_limits_and_unknown_fields_are_refused(
    stores: tuple[Database, TenantService, QuotaService],
) -> None:
    _, tenants, quotas = stores
    tenants.create_tenant("acme", actor="test")
    with pytest.raises(InvalidRequestError, match="tokens_per_day"):
        quotas.update("acme", {"tokens_per_day": -1}, actor="test")
    with pytest.raises(InvalidRequestError, match="gpus"):
        quotas.update("acme", {"gpus": 1}, actor="test")


def test_model_count_limits_a_tenants_own_models(
    stores: tuple[Database, TenantService, QuotaService],
) -> None:
    db, tenants, _ = stores
    tenant = tenants.create_tenant("acme", actor="test")
    registry = ModelRegistry(db, keyring_for(db), audit_for(db))
    owner = TenantOwner(tenant.id, tenant.name, model_count=1)
    entry = registry.add_remote("acme-llm", "http://10.0.0.1:8000/v1", owner=owner, actor="test")
    assert entry.tenant_id == tenant.id and not entry.visible_to("ten_other")
    with pytest.raises(QuotaExceededError, match="model_count"):
        registry.add_remote("acme-llm-2", "http://10.0.0.1:8000/v1", owner=owner, actor="test")
    registry.add_remote(
        "shared-llm", "http://10.0.0.1:8000/v1", actor="test"
    )  # shared models do not count


@pytest.mark.parametrize(
    ("text", "cores"), [("4", 4.0), ("0.5", 0.5), ("500m", 0.5), ("1500m", 1.5)]
)
def test_cpu_quantities(text: str, cores: float) -> None:
    assert parse_cpu(text) == cores


@pytest.mark.parametrize(
    ("text", "size"),
    [("1024", 1024), ("512Mi", 512 * 2**20), ("32Gi", 32 * 2**30), ("1T", 10**12), ("2k", 2000)],
)
def test_byte_quantities(text: str, size: int) -> None:
    assert parse_bytes(text, "memory_limit") == size


@pytest.mark.parametrize("text", ["", "-1", "12 apples", "1.5.2Gi", "5m"])
def test_malformed_byte_quantities_are_refused(text: str) -> None:
    with pytest.raises(InvalidRequestError, match="memory_limit"):
        parse_bytes(text, "memory_limit")


def test_the_cache_reads_the_store_once_per_ttl(
    stores: tuple[Database, TenantService, QuotaService],
) -> None:
    _, tenants, quotas = stores
    tenant = tenants.create_tenant("acme", actor="test")
    key, _ = tenants.create_key("acme", Role.DEVELOPER, actor="test")
    now = [0.0]
    cache = LimitsCache(quotas, ttl_seconds=2.0, clock=lambda: now[0])
    caller = Principal(tenant.id, "acme", key.id, Role.DEVELOPER)

    async def scenario() -> None:
        assert (await cache.limits_for(caller)).tenant.concurrency is None
        quotas.update("acme", {"concurrency": 3}, actor="test")
        assert (await cache.limits_for(caller)).tenant.concurrency is None  # cached
        now[0] = 2.5
        assert (await cache.limits_for(caller)).tenant.concurrency == 3

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"tokens_per_day": 10**20}, "tokens_per_day"),
        ({"concurrency": 2**31}, "concurrency"),
        ({"cpu_limit": 1e9}, "cpu_limit"),
    ],
)
def test_limits_beyond_what_the_store_holds_are_refused(
    stores: tuple[Database, TenantService, QuotaService], changes: dict[str, int], field: str
) -> None:
    _, tenants, quotas = stores
    tenants.create_tenant("acme", actor="test")
    with pytest.raises(InvalidRequestError, match=f"{field} must be between 0 and"):
        quotas.update("acme", changes, actor="test")
    assert quotas.get("acme") == Quota()


def test_an_enormous_quantity_is_refused_not_overflowed() -> None:
    with pytest.raises(InvalidRequestError, match="too large"):
        parse_bytes("99999999999Pi", "memory_limit")
