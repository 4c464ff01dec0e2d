"""Flow versions in the store, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from inhouse.errors import InvalidRequestError, NotFoundError, PermissionDeniedError
from inhouse.flows.catalogue import default_registry
from inhouse.flows.store import FlowStore
from inhouse.security.api_keys import ApiKeyHasher
from inhouse.security.audit import AuditLog
from inhouse.store.db import Database
from inhouse.store.migrate import upgrade_to_head
from inhouse.tenancy.service import TenantService
from tests.keyrings import audit_for, keyring_for


@pytest.fixture
def db(database_url: str) -> Database:
    database = Database(database_url)
    upgrade_to_head(database.engine)
    tenants = TenantService(database, ApiKeyHasher(b"k"), audit_for(database))
    tenants.create_tenant("bank", actor="test")
    tenants.create_tenant("insurer", actor="test")
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


def test_only_an_admin_may_hide_the_ai_label(store: FlowStore) -> None:
    hidden = {
        "name": "quiet",
        "model": {"alias": "m"},
        "post": [{"type": "label", "options": {"visible": False}}],
    }
    with pytest.raises(PermissionDeniedError, match="tenant-admin") as refused:
        store.apply("bank", hidden, actor="ih-dev", may_hide_label=False)
    assert refused.value.code == "label_requires_tenant_admin"
    assert store.list("bank") == []
    assert store.apply("bank", spec("shown"), actor="ih-dev", may_hide_label=False).version == 1
    assert store.apply("bank", hidden, actor="ih-admin", may_hide_label=True).version == 1
    shown = {**hidden, "post": [{"type": "label"}]}
    assert store.apply("bank", shown, actor="ih-dev", may_hide_label=False).version == 2
    with pytest.raises(PermissionDeniedError, match="hides the visible"):
        store.rollback("bank", "quiet", actor="ih-dev", may_hide_label=False)
    assert store.show("bank", "quiet").version == 2  # still the labelled one
    assert store.rollback("bank", "quiet", actor="ih-admin").version == 1


LEXICON = "version: 1\ncategories:\n  fraud: {action: flag, terms: [insider tip]}\n"


def terms_spec(lexicon: str) -> dict[str, object]:
    return {"name": "guarded", "model": {"alias": "m"},
            "pre": [{"type": "terms", "options": {"lexicon": lexicon}}]}  # fmt: skip


def test_lexicons_from_the_api_stay_inside_the_lexicon_directory(
    store: FlowStore, tmp_path: Path
) -> None:
    root = tmp_path / "lexicons"
    (root / "finance").mkdir(parents=True)
    (root / "finance" / "terms.yaml").write_text(LEXICON)
    (tmp_path / "outside.yaml").write_text(LEXICON)
    applied = store.apply("bank", terms_spec("finance/terms.yaml"), actor="a", lexicon_root=root)
    placed = applied.spec.pre[0].options["lexicon"]
    assert placed == str((root / "finance" / "terms.yaml").resolve())  # stored absolute
    for escape in ("../outside.yaml", str(tmp_path / "outside.yaml"), "finance/../../outside.yaml"):
        with pytest.raises(InvalidRequestError, match="lexicon directory") as refused:
            store.validate(terms_spec(escape), lexicon_root=root)
        assert refused.value.param == "pre.0.options.lexicon"
    # An operator on the host (the CLI) names any file; relative to the working directory.
    operator = store.validate(terms_spec(str(tmp_path / "outside.yaml")))
    assert operator.pre[0].options["lexicon"] == str((tmp_path / "outside.yaml").resolve())


def test_versions_are_listed_oldest_first_with_the_published_one_marked(
    store: FlowStore,
) -> None:
    for notice in ("one", "two", "three"):
        store.apply("bank", spec(notice), actor="a")
    store.rollback("bank", "faq", to=2, actor="a")
    listed = [(v.version, v.published) for v in store.versions("bank", "faq")]
    assert listed == [(1, False), (2, True), (3, False)]
    with pytest.raises(NotFoundError):
        store.versions("bank", "nothing")
