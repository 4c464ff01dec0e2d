"""Encryption at rest: sealing, data keys, master key providers, rotation and rewrapping,
on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime, timedelta
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import select, update

from inhouse.config import CipherAlgorithm, Settings
from inhouse.errors import ConfigurationError
from inhouse.security import key_provider as key_provider_module
from inhouse.security.envelope import DecryptionError, Header, open_sealed, seal
from inhouse.security.key_provider import (
    ENTRY_POINT_GROUP,
    EnvironmentKeyProvider,
    FileKeyProvider,
    MasterKey,
    load_master_key,
    new_master_key_text,
)
from inhouse.security.keyring import Keyring
from inhouse.security.sealed_columns import (
    SEALED_COLUMNS,
    model_api_key_context,
    records_per_version,
    rewrap,
)
from inhouse.store.db import Database
from inhouse.store.migrate import upgrade_to_head
from inhouse.store.tables import ModelRow, utcnow

MASTER = MasterKey(b"k" * 32, "test master key")
MODELS_COLUMN = tuple(c for c in SEALED_COLUMNS if c.name == "models.api_key_sealed")


@pytest.fixture
def db(database_url: str) -> Database:
    database = Database(database_url)
    upgrade_to_head(database.engine)
    return database


@pytest.mark.parametrize("algorithm", list(CipherAlgorithm))
def test_a_sealed_value_opens_only_with_its_key_and_context(algorithm: CipherAlgorithm) -> None:
    key = os.urandom(algorithm.key_bytes)
    sealed = seal(key, Header(3, algorithm), "身份证 secret".encode(), "model:m1:api_key")
    assert sealed.startswith(f"ih1:3:{algorithm.value}:")
    assert open_sealed(key, sealed, "model:m1:api_key").decode() == "身份证 secret"
    with pytest.raises(DecryptionError):
        open_sealed(key, sealed, "model:m2:api_key")  # copied into another row
    with pytest.raises(DecryptionError):
        open_sealed(os.urandom(algorithm.key_bytes), sealed, "model:m1:api_key")
    with pytest.raises(DecryptionError):  # the header is authenticated too
        open_sealed(key, sealed.replace("ih1:3:", "ih1:4:"), "model:m1:api_key")
    flipped = sealed[:-3] + ("A" if sealed[-3] != "A" else "B") + sealed[-2:]
    with pytest.raises(DecryptionError):
        open_sealed(key, flipped, "model:m1:api_key")


def test_the_first_keyring_makes_version_one_and_rotation_keeps_old_values_open(
    db: Database,
) -> None:
    keyring = Keyring(db, MASTER, CipherAlgorithm.SM4_GCM)
    assert keyring.current.version == 1
    old = keyring.encrypt("sk-upstream-1", "model:a:api_key")
    assert keyring.rotate().version == 2
    new = keyring.encrypt("sk-upstream-2", "model:b:api_key")
    assert new.startswith("ih1:2:sm4-gcm:")
    reopened = Keyring(db, MASTER, CipherAlgorithm.SM4_GCM)  # another process
    assert reopened.decrypt_text(old, "model:a:api_key") == "sk-upstream-1"
    assert reopened.decrypt_text(new, "model:b:api_key") == "sk-upstream-2"


def test_a_key_made_by_another_process_is_picked_up_when_met(db: Database) -> None:
    gateway = Keyring(db, MASTER, CipherAlgorithm.SM4_GCM)
    cli = Keyring(db, MASTER, CipherAlgorithm.AES_256_GCM)
    cli.rotate()
    sealed = cli.encrypt("x", "ctx")
    assert sealed.startswith("ih1:2:aes-256-gcm:")
    assert gateway.decrypt_text(sealed, "ctx") == "x"


def test_a_wrong_master_key_fails_at_start_up_naming_the_key_version(db: Database) -> None:
    Keyring(db, MASTER, CipherAlgorithm.SM4_GCM)
    wrong = MasterKey(b"w" * 32, "file data/master.key", created_now=True)
    with pytest.raises(ConfigurationError) as raised:
        Keyring(db, wrong, CipherAlgorithm.SM4_GCM)
    assert "does not open data key version 1" in raised.value.message
    assert "created just now" in raised.value.message


def test_rotation_is_due_after_the_period(db: Database) -> None:
    now = [datetime(2026, 11, 1, tzinfo=UTC)]
    keyring = Keyring(db, MASTER, CipherAlgorithm.SM4_GCM, clock=lambda: now[0])
    now[0] += timedelta(days=6, hours=23)
    assert keyring.rotate_if_due(timedelta(days=7)) is None
    now[0] += timedelta(hours=1)
    rotated = keyring.rotate_if_due(timedelta(days=7))
    assert rotated is not None and rotated.version == 2


def test_the_master_key_file_is_created_private_once(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    first = FileKeyProvider(path).load()
    assert first.created_now and len(first.material) == 32
    assert path.stat().st_mode & 0o777 == 0o600
    again = FileKeyProvider(path).load()
    assert not again.created_now and again.material == first.material
    path.chmod(0o644)
    with pytest.raises(ConfigurationError, match="readable by others"):
        FileKeyProvider(path).load()
    path.chmod(0o600)
    path.write_text("dG9vIHNob3J0\n")
    with pytest.raises(ConfigurationError, match="32 random bytes"):
        FileKeyProvider(path).load()


def test_the_environment_provider_reads_inhouse_master_key() -> None:
    text = new_master_key_text()
    settings = Settings(master_key=text, crypto={"key_provider": "env"})
    assert len(EnvironmentKeyProvider(settings).load().material) == 32
    with pytest.raises(ConfigurationError, match="INHOUSE_MASTER_KEY is not set"):
        EnvironmentKeyProvider(Settings(crypto={"key_provider": "env"})).load()


def test_compliance_mode_refuses_a_rotation_period_over_seven_days() -> None:
    assert Settings(compliance_mode=True, crypto={"rotation_days": 7}).crypto.rotation_days == 7
    with pytest.raises(ValidationError, match="rotation_days must be at most 7"):
        Settings(compliance_mode=True, crypto={"rotation_days": 8})
    assert Settings(crypto={"rotation_days": 30}).crypto.rotation_days == 30


def _seal_models(db: Database, keyring: Keyring, count: int) -> dict[str, str]:
    plaintexts = {f"mdl_{n:06d}": f"sk-{n:06d}-" + "x" * 40 for n in range(count)}
    rows = [
        ModelRow(
            id=model_id,
            name=f"upstream-{model_id}",
            kind="remote",
            url="http://upstream.invalid/v1",
            api_key_sealed=keyring.encrypt(
                secret, model_api_key_context(model_id, "http://upstream.invalid/v1")
            ),
            created_at=utcnow(),
        )
        for model_id, secret in plaintexts.items()
    ]
    with db.session() as session:
        session.add_all(rows)
    return plaintexts


def _opened(db: Database, keyring: Keyring) -> dict[str, str]:
    with db.session() as session:
        stored = session.execute(select(ModelRow.id, ModelRow.api_key_sealed)).all()
    return {
        model_id: keyring.decrypt_text(
            value, model_api_key_context(model_id, "http://upstream.invalid/v1")
        )
        for model_id, value in stored
    }


def test_ten_thousand_records_survive_rotation_and_a_resumed_rewrap_beside_a_writer(
    db: Database,
) -> None:
    keyring = Keyring(db, MASTER, CipherAlgorithm.SM4_GCM)
    expected = _seal_models(db, keyring, 10_000)
    stale_gateway = Keyring(db, MASTER, CipherAlgorithm.SM4_GCM)  # will not refresh
    keyring.rotate()
    assert records_per_version(db, [1, 2], MODELS_COLUMN)["models.api_key_sealed"] == {
        "1": 10_000,
        "2": 0,
        "unsealed": 0,
    }

    # Stopped after three batches, as if the process had been killed.
    batches = iter(range(3))
    first = rewrap(
        db,
        keyring,
        batch_size=1000,
        columns=MODELS_COLUMN,
        should_stop=lambda: next(batches, None) is None,
    )
    assert first.total == 3000

    # A gateway changes records meanwhile, with the key it still holds: version 1.
    def write_beside() -> None:
        for n in range(9990, 10_000):
            model_id = f"mdl_{n:06d}"
            expected[model_id] = f"sk-changed-{n}"
            with db.session() as session:
                session.execute(
                    update(ModelRow)
                    .where(ModelRow.id == model_id)
                    .values(
                        api_key_sealed=stale_gateway.encrypt(
                            expected[model_id],
                            model_api_key_context(model_id, "http://upstream.invalid/v1"),
                        )
                    )
                )

    writer = threading.Thread(target=write_beside)
    started = time.monotonic()
    writer.start()
    second = rewrap(db, keyring, batch_size=1000, columns=MODELS_COLUMN)
    writer.join()
    third = rewrap(db, keyring, batch_size=1000, columns=MODELS_COLUMN)  # what was written beside
    elapsed = time.monotonic() - started

    assert second.total + third.total >= 7000
    assert records_per_version(db, [1, 2], MODELS_COLUMN)["models.api_key_sealed"] == {
        "1": 0,
        "2": 10_000,
        "unsealed": 0,
    }
    assert _opened(db, keyring) == expected
    assert elapsed < 120, f"rewrapping 7,000 records took {elapsed:.1f} s"


def test_a_plug_in_provider_is_found_by_its_entry_point_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "kms-key.hex").write_text("ab" * 32)
    plugin = EntryPoint(
        name="hex-kms", value="tests.unit.security.kms_plugin:provider", group=ENTRY_POINT_GROUP
    )
    monkeypatch.setattr(
        key_provider_module,
        "entry_points",
        lambda group, name: [plugin] if (group, name) == (ENTRY_POINT_GROUP, "hex-kms") else [],
    )
    settings = Settings(data_dir=tmp_path, crypto={"key_provider": "hex-kms"})
    assert load_master_key(settings).material == bytes.fromhex("ab" * 32)
    with pytest.raises(ConfigurationError, match=r"unknown crypto\.key_provider 'vault'"):
        load_master_key(Settings(data_dir=tmp_path, crypto={"key_provider": "vault"}))
