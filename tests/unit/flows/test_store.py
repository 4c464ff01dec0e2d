"""Flow versions in the store, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from inhouse.errors import InvalidRequestError, NotFoundError
from inhouse.flows.catalogue import default_registry
from inhouse.flows.store import FlowStore
from inhouse.security.api_keys import ApiKeyHasher
from inhouse.security.audit import AuditLog
from inhouse.store.db import Database
from inhouse.store.migrate import upgrade_to_head
from inhouse.tenancy.service import TenantService
from tests.keyrings import keyring_for


@pytest.fixture
def store(database_url: str) -> FlowStore:
    db = Database(database_url)
    upgrade_to_head(db.engine)
    tenants = TenantService(db, ApiKeyHasher(b"k"))
    tenants.create_tenant("bank")
    tenants.create_tenant("insurer")
    return FlowStore(db, default_registry(), AuditLog(db, b"s" * 32, keyring_for(db)))


def spec(notice: str) -> dict[str, object]:
    return {
        "name": "faq",
        "model": {"alias": "m"},
        "post": [{"type": "label", "options": {"notice": notice}}],
    }


def test_versions_publish_and_roll_back(store: FlowStore) -> None:
    assert store.apply("bank", spec("one"), actor="cli:a").version == 1
    assert store.apply("bank", spec("two"), actor="cli:a").version == 2
    assert store.apply("insurer", spec("other"), actor="cli:a").version == 1
    bank_id = store.show("bank", "faq").tenant_id
    published = store.published(bank_id, "faq")
    assert published is not None and published.version == 2
    assert store.rollback("bank", "faq", actor="cli:a").version == 1
    assert store.show("bank", "faq").spec.post[0].options == {"notice": "one"}
    assert not store.show("bank", "faq", 2).published
    with pytest.raises(InvalidRequestError, match="no earlier one"):
        store.rollback("bank", "faq", actor="cli:a")
    assert store.rollback("bank", "faq", to=2, actor="cli:a").version == 2
    with pytest.raises(NotFoundError):
        store.rollback("bank", "faq", to=7, actor="cli:a")
    with pytest.raises(NotFoundError):
        store.show("bank", "nothing")
    listed = {(f.name, f.published, f.latest) for f in store.list("bank")}
    assert listed == {("faq", 2, 2)}
    assert len(store.list()) == 2


def test_an_invalid_spec_stores_nothing(store: FlowStore) -> None:
    with pytest.raises(InvalidRequestError):
        store.apply(
            "bank", {"name": "faq", "model": {"alias": "m"}, "pre": [{"type": "x"}]}, actor="a"
        )
    assert store.list("bank") == []
