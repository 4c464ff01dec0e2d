from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update

from inhouse.errors import (
    ConflictError,
    EngineUnavailableError,
    InvalidRequestError,
    NotFoundError,
)
from inhouse.registry.models import ModelKind, ModelRegistry
from inhouse.security.sealed_columns import legacy_model_api_key_context
from inhouse.store.db import Database
from inhouse.store.migrate import upgrade_to_head
from inhouse.store.tables import ModelRow
from tests.keyrings import audit_for, keyring_for


@pytest.fixture
def registry(database_url: str) -> ModelRegistry:
    db = Database(database_url)
    upgrade_to_head(db.engine)
    return ModelRegistry(db, keyring_for(db), audit_for(db))


def test_add_list_remove(registry: ModelRegistry, tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "config.json").write_text("{}")
    registry.add_builtin(actor="test")
    registry.add_local("legal-7b", weights, actor="test")
    registry.add_remote(
        "center",
        "http://gpu-1:8000/v1/",
        upstream_model="qwen",
        api_key_env="INHOUSE_UPSTREAM_K",
        actor="test",
    )

    entries = {e.name: e for e in registry.list()}
    assert {n: e.kind for n, e in entries.items()} == {
        "smollm2-135m-instruct": ModelKind.BUILTIN,
        "legal-7b": ModelKind.LOCAL,
        "center": ModelKind.REMOTE,
    }
    assert entries["center"].url == "http://gpu-1:8000/v1"
    assert entries["legal-7b"].path == str(weights.resolve())

    registry.remove("legal-7b", actor="test")
    with pytest.raises(NotFoundError):
        registry.get("legal-7b")


def test_invalid_entries_are_refused(registry: ModelRegistry, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match=r"config\.json"):
        registry.add_local("empty", tmp_path, actor="test")
    with pytest.raises(InvalidRequestError):
        registry.add_remote("x", "ftp://nowhere", actor="test")
    with pytest.raises(InvalidRequestError):
        registry.add_remote("flow:x", "http://h/v1", actor="test")
    with pytest.raises(InvalidRequestError):
        registry.add_remote("x", "http://h/v1", api_key_env="NOT A VAR", actor="test")
    with pytest.raises(InvalidRequestError, match="may not be sent upstream"):
        registry.add_remote("x", "http://h/v1", api_key_env="INHOUSE_SECRET_KEY", actor="test")
    registry.add_remote(
        "ok", "http://h/v1", api_key_env="INHOUSE_UPSTREAM_KEY_CENTER", actor="test"
    )
    registry.add_remote("dup", "http://h/v1", actor="test")
    with pytest.raises(ConflictError):
        registry.add_remote("dup", "http://h/v1", actor="test")


def test_the_node_of_a_remote_model_is_its_host_without_credentials() -> None:
    from datetime import UTC, datetime

    from inhouse.registry.models import ModelEntry, ModelKind

    now = datetime.now(UTC)
    entry = ModelEntry("m", "m", ModelKind.REMOTE, now, url="https://user:t0ken@gpu-1:8443/v1")
    assert entry.node_label == "gpu-1:8443"
    assert ModelEntry("m", "m", ModelKind.LOCAL, now, path="/w").node_label == "local"


def test_an_upstream_key_is_sealed_in_the_store_and_opened_for_the_engine(
    registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = registry.add_remote(
        "vendor", "https://api.vendor.example/v1", api_key=" sk-9 \n", actor="test"
    )
    assert entry.api_key_sealed is not None and "sk-9" not in entry.api_key_sealed
    assert registry.upstream_api_key(registry.get("vendor")) == "sk-9"
    monkeypatch.setenv("INHOUSE_UPSTREAM_VENDOR", "sk-from-env")
    by_variable = registry.add_remote(
        "other", "https://b.example/v1", api_key_env="INHOUSE_UPSTREAM_VENDOR", actor="test"
    )
    assert registry.upstream_api_key(by_variable) == "sk-from-env"
    with pytest.raises(InvalidRequestError, match="not both"):
        registry.add_remote(
            "both",
            "https://c.example/v1",
            api_key="k",
            api_key_env="INHOUSE_UPSTREAM_K",
            actor="test",
        )


def test_a_sealed_key_moved_to_another_url_does_not_open(database_url: str) -> None:
    """Written as the attack: write access to the database, a model row pointed at a
    server of the attacker's. The key sealed for the model's own URL no longer opens, so
    it is never sent there."""
    db = Database(database_url)
    upgrade_to_head(db.engine)
    registry = ModelRegistry(db, keyring_for(db), audit_for(db))
    registry.add_remote("vendor", "https://api.vendor.example/v1", api_key="sk-9", actor="t")
    with db.engine.begin() as connection:
        connection.exec_driver_sql(
            "UPDATE models SET url = 'https://collector.example/v1' WHERE name = 'vendor'"
        )
    with pytest.raises(EngineUnavailableError, match="does not open for its URL"):
        registry.upstream_api_key(registry.get("vendor"))
    with db.engine.begin() as connection:  # put back, it opens again
        connection.exec_driver_sql(
            "UPDATE models SET url = 'https://api.vendor.example/v1' WHERE name = 'vendor'"
        )
    assert registry.upstream_api_key(registry.get("vendor")) == "sk-9"
    db.dispose()


def test_keys_sealed_before_url_binding_are_bound_at_start_up(database_url: str) -> None:
    db = Database(database_url)
    upgrade_to_head(db.engine)
    keyring = keyring_for(db)
    registry = ModelRegistry(db, keyring, audit_for(db))
    entry = registry.add_remote("old", "https://api.vendor.example/v1", actor="t")
    legacy = keyring.encrypt("sk-old", legacy_model_api_key_context(entry.id))
    with db.engine.begin() as connection:
        connection.execute(
            update(ModelRow).where(ModelRow.id == entry.id).values(api_key_sealed=legacy)
        )
    assert registry.bind_sealed_keys() == 1
    assert registry.bind_sealed_keys() == 0
    assert registry.upstream_api_key(registry.get("old")) == "sk-old"
    db.dispose()


def test_a_model_row_pointed_at_another_variable_sends_nothing(
    registry: ModelRegistry, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written as the attack: a model row edited in the database to name a secret of the
    gateway's process. It is not read, so it is never sent."""
    registry.add_remote("m", "https://h/v1", api_key_env="INHOUSE_UPSTREAM_M", actor="t")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "the-cloud-password")
    monkeypatch.setenv("INHOUSE_SECRET_KEY", "the-server-secret-of-32-characters")
    db = Database(database_url)
    for variable in ("AWS_SECRET_ACCESS_KEY", "INHOUSE_SECRET_KEY"):
        with db.engine.begin() as connection:
            connection.execute(
                update(ModelRow).where(ModelRow.name == "m").values(api_key_env=variable)
            )
        assert registry.upstream_api_key(registry.get("m")) is None
    db.dispose()
