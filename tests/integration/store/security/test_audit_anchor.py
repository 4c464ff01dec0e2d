"""Checkpoints of the audit chain's head outside the database, on SQLite and PostgreSQL:
written as the attack, someone with write access to the database deletes the newest
entries (one, ten, all of them) to erase their tracks."""

from __future__ import annotations

from pathlib import Path

import pytest

from inhouse.security.audit import AuditEvent, AuditLog
from inhouse.security.audit_anchor import AuditAnchor
from inhouse.store.db import Database
from inhouse.store.migrate import upgrade_to_head
from tests.keyrings import keyring_for

SECRET = b"s" * 32


def chain(
    database_url: str, tmp_path: Path, entries: int
) -> tuple[Database, AuditLog, AuditAnchor]:
    db = Database(database_url)
    upgrade_to_head(db.engine)
    audit = AuditLog(db, SECRET, keyring_for(db))
    for n in range(entries):
        audit.record(AuditEvent("cli:ops", "quota.update", target=f"t{n}"))
    return db, audit, AuditAnchor(audit, tmp_path / "checkpoints.jsonl", SECRET)


def delete_from(db: Database, seq: int) -> None:
    with db.engine.begin() as connection:
        connection.exec_driver_sql(f"DELETE FROM audit_events WHERE seq >= {seq}")


@pytest.mark.parametrize("deleted", [1, 10, 30])
def test_deleting_the_newest_entries_is_reported_by_sequence_number(
    database_url: str, tmp_path: Path, deleted: int
) -> None:
    db, audit, anchor = chain(database_url, tmp_path, 30)
    assert anchor.checkpoint() is not None
    assert anchor.check().ok
    delete_from(db, 31 - deleted)
    assert audit.verify().ok  # the shortened chain alone looks intact
    found = anchor.check()
    assert not found.ok
    assert found.missing == (31 - deleted, 30)
    assert f"entries {31 - deleted} to 30 are missing" in found.problem
    db.dispose()


def test_entries_after_the_latest_checkpoint_are_not_yet_covered(
    database_url: str, tmp_path: Path
) -> None:
    db, audit, anchor = chain(database_url, tmp_path, 5)
    anchor.checkpoint()
    audit.record(AuditEvent("cli:ops", "key.revoke"))
    assert anchor.checkpoint() is not None and anchor.latest().seq == 6  # type: ignore[union-attr]
    assert anchor.checkpoint() is None  # unchanged head: nothing new to write
    delete_from(db, 6)
    assert anchor.check().missing == (6, 6)
    db.dispose()


def test_a_rewritten_tail_and_a_forged_checkpoint_are_caught(
    database_url: str, tmp_path: Path
) -> None:
    db, _, anchor = chain(database_url, tmp_path, 5)
    anchor.checkpoint()
    with db.engine.begin() as connection:  # entry 5 replaced by a look-alike
        connection.exec_driver_sql("UPDATE audit_events SET hash = 'f' || substr(hash, 2) "
                                   "WHERE seq = 5")  # fmt: skip
    assert "rewritten" in anchor.check().problem
    forged = tmp_path / "checkpoints.jsonl"
    forged.write_text(forged.read_text() + '{"seq":1,"hash":"x","at":"now","signature":"00"}\n')
    assert anchor.latest().seq == 5  # type: ignore[union-attr]  # the forged line is skipped
    db.dispose()


def test_a_checkpoint_of_an_empty_chain_is_nothing(database_url: str, tmp_path: Path) -> None:
    db, _, anchor = chain(database_url, tmp_path, 0)
    assert anchor.checkpoint() is None and anchor.check().ok
    db.dispose()


@pytest.mark.parametrize("edited", [1, 15, 30])
def test_an_edit_anywhere_in_the_chain_is_named(
    database_url: str, tmp_path: Path, edited: int
) -> None:
    db, audit, anchor = chain(database_url, tmp_path, 30)
    anchor.checkpoint()
    with db.engine.begin() as connection:
        connection.exec_driver_sql(
            f"UPDATE audit_events SET target = 'someone else' WHERE seq = {edited}"
        )
    found = audit.verify()
    assert not found.ok and found.first_bad_seq == edited
    assert found.problem == f"entry {edited} was changed"
    db.dispose()
