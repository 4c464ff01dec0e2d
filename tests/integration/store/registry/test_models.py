from __future__ import annotations

from pathlib import Path

import pytest

from inhouse.errors import ConflictError, InvalidRequestError, NotFoundError
from inhouse.registry.models import ModelKind, ModelRegistry
from inhouse.store.db import Database
from inhouse.store.migrate import upgrade_to_head
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
        "center", "http://gpu-1:8000/v1/", upstream_model="qwen", api_key_env="K", actor="test"
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
    with pytest.raises(InvalidRequestError, match="own settings"):
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
    monkeypatch.setenv("VENDOR_KEY", "sk-from-env")
    by_variable = registry.add_remote(
        "other", "https://b.example/v1", api_key_env="VENDOR_KEY", actor="test"
    )
    assert registry.upstream_api_key(by_variable) == "sk-from-env"
    with pytest.raises(InvalidRequestError, match="not both"):
        registry.add_remote(
            "both", "https://c.example/v1", api_key="k", api_key_env="K", actor="test"
        )
