"""The audit chain on SQLite and PostgreSQL: appends from many writers, and every kind
of tampering found and located."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import delete, update

from inhouse.security.audit import AuditEvent, AuditLog
from inhouse.store.db import Database
from inhouse.store.migrate import upgrade_to_head
from inhouse.store.tables import AuditRow

SECRET = b"s" * 48


@pytest.fixture
def db(database_url: str) -> Database:
    database = Database(database_url)
    upgrade_to_head(database.engine)
    return database


def fill(log: AuditLog, count: int) -> None:
    for n in range(count):
        log.record(AuditEvent("key_admin", "quota.update", "ten_a", "acme", details={"n": n}))


def test_an_untouched_chain_verifies(db: Database) -> None:
    log = AuditLog(db, SECRET)
    assert log.verify().ok and log.verify().checked == 0
    fill(log, 5)
    result = log.verify()
    assert result.ok and result.checked == 5
    entries = log.entries()
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[1].prev_hash == entries[0].hash
    assert entries[4].as_dict()["details"] == {"n": 4}


def test_concurrent_writers_keep_one_unbroken_chain(db: Database) -> None:
    log = AuditLog(db, SECRET)
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda _: fill(log, 10), range(6)))
    result = log.verify()
    assert result.ok and result.checked == 60


def test_an_edited_entry_is_named(db: Database) -> None:
    log = AuditLog(db, SECRET)
    fill(log, 6)
    with db.session() as session:
        session.execute(update(AuditRow).where(AuditRow.seq == 4).values(actor="key_someone"))
    result = log.verify()
    assert (result.ok, result.first_bad_seq, result.checked) == (False, 4, 3)
    assert result.problem == "entry 4 was changed"


def test_a_deleted_entry_is_named(db: Database) -> None:
    log = AuditLog(db, SECRET)
    fill(log, 6)
    with db.session() as session:
        session.execute(delete(AuditRow).where(AuditRow.seq == 3))
    result = log.verify()
    assert (result.first_bad_seq, result.problem) == (3, "entry 3 is missing (the next entry is 4)")


def test_reordered_entries_are_named(db: Database) -> None:
    log = AuditLog(db, SECRET)
    fill(log, 6)
    # Swap entries 2 and 5 whole (hashes included), renumbering them.
    with db.session() as session:
        session.execute(update(AuditRow).where(AuditRow.seq == 2).values(seq=-2))
        session.execute(update(AuditRow).where(AuditRow.seq == 5).values(seq=2))
        session.execute(update(AuditRow).where(AuditRow.seq == -2).values(seq=5))
    result = log.verify()
    assert (result.first_bad_seq, result.problem) == (2, "entry 2 does not follow entry 1")


def test_a_chain_rebuilt_without_the_secret_does_not_verify(db: Database) -> None:
    fill(AuditLog(db, b"not the server secret" * 3), 3)
    result = AuditLog(db, SECRET).verify()
    assert result.first_bad_seq == 1
