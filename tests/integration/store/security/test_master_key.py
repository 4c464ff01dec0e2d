"""Key management under failure, on SQLite and PostgreSQL: a change of master key that
stops midway loses nothing and finishes when run again; a scheduled rewrap that stopped
resumes by itself; weak or careless settings are refused."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from inhouse.config import CipherAlgorithm, CryptoSettings, Settings
from inhouse.errors import ConfigurationError
from inhouse.security.audit import AuditEvent, AuditLog
from inhouse.security.key_provider import MasterKey, load_master_key
from inhouse.security.key_rotation import KeyRotation
from inhouse.security.keyring import Keyring
from inhouse.security.sealed_columns import stale_records_exist
from inhouse.store.db import Database
from inhouse.store.migrate import upgrade_to_head

OLD = MasterKey(b"o" * 32, "old master key")
NEW = MasterKey(secrets.token_bytes(32), "new master key")


@pytest.fixture
def db(database_url: str) -> Database:
    database = Database(database_url)
    upgrade_to_head(database.engine)
    return database


def keyring(db: Database, master: MasterKey, next_master: MasterKey | None = None) -> Keyring:
    return Keyring(db, master, CipherAlgorithm.SM4_GCM, next_master=next_master)


def test_a_master_key_change_that_stops_midway_loses_nothing_and_resumes(db: Database) -> None:
    ring = keyring(db, OLD)
    sealed = {}
    for n in range(4):  # four data keys, a record sealed under each
        if n:
            ring.rotate()
        version = ring.current.version
        sealed[version] = ring.encrypt(f"record {version}", "ctx")
    calls = iter([False, True, True, True])
    assert ring.rewrap_data_keys(NEW, should_stop=lambda: next(calls)) == (1, 3)  # a crash
    with pytest.raises(ConfigurationError, match="does not open data key"):
        keyring(db, NEW)  # the new key alone opens only what was re-wrapped so far
    restarted = keyring(db, OLD, next_master=NEW)  # the gateway after the crash
    assert {v: restarted.decrypt_text(s, "ctx") for v, s in sealed.items()} == {
        v: f"record {v}" for v in sealed
    }
    assert restarted.rewrap_data_keys(NEW) == (3, 0)  # run again: finished
    assert restarted.rewrap_data_keys(NEW) == (0, 0)
    done = keyring(db, NEW)
    assert done.decrypt_text(sealed[1], "ctx") == "record 1"
    with pytest.raises(ConfigurationError):
        keyring(db, OLD)  # the old master key opens nothing any more
    db.dispose()


def test_a_scheduled_rewrap_that_stopped_resumes_at_the_next_check(db: Database) -> None:
    now = [datetime(2026, 12, 1, tzinfo=UTC)]
    ring = Keyring(db, OLD, CipherAlgorithm.SM4_GCM, clock=lambda: now[0])
    audit = AuditLog(db, b"s" * 32, ring)
    for n in range(5):
        audit.record(audit_event(n))
    rotation = KeyRotation(db, ring, audit, CryptoSettings(rotation_days=7), clock=lambda: now[0])
    now[0] += timedelta(days=8)
    assert rotation.rotate_if_due(should_stop=lambda: True) == 2  # stopped before any row
    assert stale_records_exist(db, ring)
    assert rotation.rotate_if_due() is None  # not due: the unfinished rewrap is resumed
    assert not stale_records_exist(db, ring)
    assert audit.verify().ok
    db.dispose()


def audit_event(n: int) -> AuditEvent:
    return AuditEvent("cli:ops", "quota.update", target=f"t{n}", details={"n": n})


def test_rotation_has_an_upper_bound_outside_compliance_mode() -> None:
    assert CryptoSettings(rotation_days=90).rotation_days == 90
    with pytest.raises(ValidationError, match="90"):
        CryptoSettings(rotation_days=91)


def test_in_production_the_master_key_file_may_not_lie_beside_the_database(
    tmp_path: Path,
) -> None:
    secret = "x" * 40
    beside = Settings(environment="production", secret_key=secret, data_dir=tmp_path / "data")
    with pytest.raises(ConfigurationError, match="database's directory"):
        load_master_key(beside)
    elsewhere = Settings(
        environment="production",
        secret_key=secret,
        data_dir=tmp_path / "data",
        crypto=CryptoSettings(master_key_file=tmp_path / "keys" / "master.key"),
    )
    (tmp_path / "keys").mkdir()
    assert len(load_master_key(elsewhere).material) == 32
    development = Settings(data_dir=tmp_path / "dev")
    (tmp_path / "dev").mkdir()
    assert load_master_key(development).created_now  # development: beside is fine
