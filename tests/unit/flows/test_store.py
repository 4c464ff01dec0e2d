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
def db(database_url: str) -> Database:
    database = Database(database_url)
    upgrade_to_head(database.engine)
    tenants = TenantService(database, ApiKeyHasher(b"k"))
    tenants.create_tenant("bank")
    tenants.create_tenant("insurer")
    return database


@pytest.fixture
def audit(db: Database) -> AuditLog:
    return AuditLog(db, b"s" * 32, keyring_for(db))


@pytest.fixture
def store(db: Database, audit: AuditLog) -> FlowStore:
    return FlowStore(db, default_registry(), audit)


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


def test_hiding_the_ai_label_is_recorded_in_the_audit_log(
    store: FlowStore, audit: AuditLog
) -> None:
    hidden = {
        "name": "quiet",
        "model": {"alias": "m"},
        "post": [{"type": "label", "options": {"visible": False}}],
    }
    store.apply("bank", hidden, actor="cli:admin")
    store.apply("bank", spec("shown"), actor="cli:admin")
    entries = [e.as_dict() for e in audit.entries() if e.action == "flow.apply"]
    assert [e["details"].get("ai_label_visible") for e in entries] == [False, None]
