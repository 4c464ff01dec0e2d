"""The audit chain on SQLite and PostgreSQL: appends from many writers, and every kind
of tampering found and located."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from sqlalchemy import delete, select, update

from inhouse.config import CipherAlgorithm
from inhouse.security.audit import AuditEvent, AuditLog
from inhouse.security.key_provider import MasterKey
from inhouse.security.keyring import Keyring
from inhouse.security.sealed_columns import rewrap
from inhouse.store.db import Database
from inhouse.store.migrate import upgrade_to_head
from inhouse.store.tables import AuditRow

SECRET = b"s" * 48
MASTER = MasterKey(b"m" * 32, "test")


def audit_log(db: Database, secret: bytes = SECRET) -> AuditLog:
    return AuditLog(db, secret, Keyring(db, MASTER, CipherAlgorithm.SM4_GCM))


@pytest.fixture
def db(database_url: str) -> Database:
    database = Database(database_url)
    upgrade_to_head(database.engine)
    return database


def fill(log: AuditLog, count: int) -> None:
    for n in range(count):
        log.record(AuditEvent("key_admin", "quota.update", "ten_a", "acme", details={"n": n}))


def test_an_untouched_chain_verifies(db: Database) -> None:
    log = audit_log(db)
    assert log.verify().ok and log.verify().checked == 0
    fill(log, 5)
    result = log.verify()
    assert result.ok and result.checked == 5
    entries = log.entries()
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[1].prev_hash == entries[0].hash
    assert entries[4].as_dict()["details"] == {"n": 4}


def test_concurrent_writers_keep_one_unbroken_chain(db: Database) -> None:
    log = audit_log(db)
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda _: fill(log, 10), range(6)))
    result = log.verify()
    assert result.ok and result.checked == 60


def test_an_edited_entry_is_named(db: Database) -> None:
    log = audit_log(db)
    fill(log, 6)
    with db.session() as session:
        session.execute(update(AuditRow).where(AuditRow.seq == 4).values(actor="key_someone"))
    result = log.verify()
    assert (result.ok, result.first_bad_seq, result.checked) == (False, 4, 3)
    assert result.problem == "entry 4 was changed"


def test_a_deleted_entry_is_named(db: Database) -> None:
    log = audit_log(db)
    fill(log, 6)
    with db.session() as session:
        session.execute(delete(AuditRow).where(AuditRow.seq == 3))
    result = log.verify()
    assert (result.first_bad_seq, result.problem) == (3, "entry 3 is missing (the next entry is 4)")


def test_reordered_entries_are_named(db: Database) -> None:
    log = audit_log(db)
    fill(log, 6)
    # Swap entries 2 and 5 whole (hashes included), renumbering them.
    with db.session() as session:
        session.execute(update(AuditRow).where(AuditRow.seq == 2).values(seq=-2))
        session.execute(update(AuditRow).where(AuditRow.seq == 5).values(seq=2))
        session.execute(update(AuditRow).where(AuditRow.seq == -2).values(seq=5))
    result = log.verify()
    assert (result.first_bad_seq, result.problem) == (2, "entry 2 does not follow entry 1")


def test_a_chain_rebuilt_without_the_secret_does_not_verify(db: Database) -> None:
    fill(audit_log(db, b"not the server secret" * 3), 3)
    result = audit_log(db).verify()
    assert result.first_bad_seq == 1


def test_details_are_sealed_at_rest_and_a_changed_ciphertext_is_named(db: Database) -> None:
    log = audit_log(db)
    fill(log, 4)
    with db.session() as session:
        stored = session.scalar(select(AuditRow.details).where(AuditRow.seq == 3))
        assert stored is not None and stored.startswith("ih1:1:sm4-gcm:")
        assert '"n"' not in stored
        moved = session.scalar(select(AuditRow.details).where(AuditRow.seq == 2))
        session.execute(update(AuditRow).where(AuditRow.seq == 3).values(details=moved))
    result = log.verify()
    assert (result.first_bad_seq, result.problem) == (3, "entry 3 was changed (details)")
    assert log.entries()[2].as_dict()["details"] == {
        "error": "details changed: they do not decrypt"
    }


def test_rewrapping_under_a_new_key_keeps_the_chain_intact(db: Database) -> None:
    keyring = Keyring(db, MASTER, CipherAlgorithm.SM4_GCM)
    log = AuditLog(db, SECRET, keyring)
    fill(log, 5)
    keyring.rotate()
    report = rewrap(db, keyring, batch_size=2)
    assert report.rewrapped["audit_events.details"] == 5
    with db.session() as session:
        stored = session.scalars(select(AuditRow.details)).all()
    assert all(value.startswith("ih1:2:") for value in stored)
    assert log.verify().ok
    assert [e.as_dict()["details"] for e in log.entries()] == [{"n": n} for n in range(5)]


def test_retention_prunes_the_oldest_entries_and_the_rest_still_verifies(db: Database) -> None:
    log = audit_log(db)
    fill(log, 5)
    cutoff = datetime.now(UTC)
    time.sleep(0.01)
    fill(log, 3)
    assert log.prune(cutoff) == 5
    assert [e.seq for e in log.entries()] == [6, 7, 8, 9]
    assert log.entries()[-1].action == "audit.prune"
    assert log.verify().ok and log.verify().checked == 4
    assert log.prune(cutoff) == 0


def test_deleting_the_oldest_entries_without_a_prune_is_found(db: Database) -> None:
    log = audit_log(db)
    fill(log, 5)
    with db.session() as session:
        session.execute(delete(AuditRow).where(AuditRow.seq <= 2))
    result = log.verify()
    assert (result.first_bad_seq, result.problem) == (
        1,
        "entries 1 to 2 are missing and no prune accounts for them",
    )
