from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from inhouse.config import MeteringSettings
from inhouse.security.audit import AuditLog
from inhouse.store.db import Database
from inhouse.store.migrate import upgrade_to_head
from inhouse.store.tables import UsageRow
from inhouse.tenancy.metering import IN_PROGRESS, UsageEvent, UsageRecorder
from inhouse.tenancy.usage_journal import UsageJournal
from tests.keyrings import keyring_for


def event(n: int) -> UsageEvent:
    return UsageEvent(
        request_id=f"req-{n}",
        created_at=datetime.now(UTC),
        tenant_id="ten_a",
        key_id="key_a",
        model="m",
        endpoint="chat.completions",
        stream=False,
        status_code=200,
        prompt_tokens=10,
        completion_tokens=n,
        latency_ms=1.0,
    )


def count(db: Database) -> tuple[int, int]:
    with db.session() as session:
        rows, tokens = session.execute(
            select(func.count(UsageRow.id), func.coalesce(func.sum(UsageRow.completion_tokens), 0))
        ).one()
        return int(rows), int(tokens)


def test_records_are_written_in_batches_and_flushed_on_close(database_url: str) -> None:
    db = Database(database_url)
    upgrade_to_head(db.engine)
    recorder = UsageRecorder(db, MeteringSettings(flush_interval_seconds=60, batch_size=100))

    async def scenario() -> None:
        recorder.start()
        for n in range(250):
            recorder.record(event(n))
        await asyncio.sleep(0.5)  # two full batches wake the writer; 50 wait
        written, _ = count(db)
        assert written in (100, 200, 250)
        await recorder.close()

    asyncio.run(scenario())
    assert count(db) == (250, sum(range(250)))


def test_a_failed_write_keeps_the_batch(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    recorder = UsageRecorder(db, MeteringSettings(flush_interval_seconds=60, batch_size=100))

    async def scenario() -> None:
        recorder.record(event(1))
        recorder.record(event(2))
        await recorder.flush()  # no tables yet: the write fails
        assert recorder.pending == 2
        upgrade_to_head(db.engine)
        await recorder.flush()
        assert recorder.pending == 0

    asyncio.run(scenario())
    assert count(db) == (2, 3)


def test_records_that_cannot_be_written_at_shutdown_stay_in_the_journal_and_replay(
    tmp_path: Path,
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    journal_dir = tmp_path / "journal"
    settings = MeteringSettings(flush_interval_seconds=60, batch_size=100)

    async def shut_down_without_database() -> None:
        recorder = UsageRecorder(db, settings, UsageJournal(journal_dir))
        recorder.start()
        for n in range(5):
            recorder.record(event(n))
        await recorder.close()  # no tables: the write fails, the journal keeps them

    asyncio.run(shut_down_without_database())
    segments = list(journal_dir.glob("*.jsonl"))
    assert segments
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in segments)
    upgrade_to_head(db.engine)

    async def restart() -> None:
        recorder = UsageRecorder(db, settings, UsageJournal(journal_dir))
        recorder.start()
        recorder.record(event(1))  # the same request again: never counted twice
        await recorder.close()

    asyncio.run(restart())
    assert count(db) == (5, sum(range(5)))
    assert list(journal_dir.glob("*.jsonl")) == []


_KILLED_WRITER = """
import asyncio, os, signal, sys
from datetime import UTC, datetime
from inhouse.config import MeteringSettings
from inhouse.store.db import Database
from inhouse.tenancy.metering import IN_PROGRESS, UsageEvent, UsageRecorder
from inhouse.tenancy.usage_journal import UsageJournal

async def main() -> None:
    db = Database(sys.argv[1])
    recorder = UsageRecorder(
        db, MeteringSettings(flush_interval_seconds=3600, batch_size=10**6),
        UsageJournal(__import__("pathlib").Path(sys.argv[2])),
    )
    recorder.start()
    for n in range(40):
        recorder.record(UsageEvent(
            request_id=f"req-{n}", created_at=datetime.now(UTC), tenant_id="ten_a",
            key_id="key_a", model="m", endpoint="chat.completions", stream=False,
            status_code=200, prompt_tokens=10, completion_tokens=n, latency_ms=1.0))
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


def test_a_killed_process_leaves_its_records_for_the_next_start(
    tmp_path: Path, database_url: str
) -> None:
    db = Database(database_url)
    upgrade_to_head(db.engine)
    journal_dir = tmp_path / "journal"
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, database_url, str(journal_dir)],
        capture_output=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert count(db) == (0, 0)  # nothing reached the database before the kill

    audit = AuditLog(db, b"s" * 32, keyring_for(db))

    async def restart() -> None:
        recorder = UsageRecorder(db, MeteringSettings(), UsageJournal(journal_dir), audit=audit)
        recorder.start()
        await recorder.close()

    asyncio.run(restart())
    assert count(db) == (40, sum(range(40)))
    # The replay also chained each request's audit entry, once.
    audited = [e.as_dict()["details"]["request_id"] for e in audit.entries()]
    assert sorted(audited) == sorted(f"req-{n}" for n in range(40))
    asyncio.run(restart())
    assert len(audit.entries()) == 40 and audit.verify().ok


def test_a_segment_held_by_a_running_process_is_left_alone(tmp_path: Path) -> None:
    journal_dir = tmp_path / "journal"
    running = UsageJournal(journal_dir)
    running.open()
    running.append({"request_id": "req-live"})
    other = UsageJournal(journal_dir)
    assert other.open() == []  # the live segment is locked
    other.close(written=True)
    running.close(written=False)
    assert [r["request_id"] for r in UsageJournal(journal_dir).open()] == ["req-live"]


def test_a_line_cut_short_is_skipped(tmp_path: Path) -> None:
    journal_dir = tmp_path / "journal"
    journal_dir.mkdir()
    (journal_dir / "1-1-1.jsonl").write_text('{"request_id": "a"}\n{"request_id": "b"')
    assert [r["request_id"] for r in UsageJournal(journal_dir).open()] == ["a"]


def test_a_streams_final_record_replaces_its_in_progress_one(database_url: str) -> None:
    db = Database(database_url)
    upgrade_to_head(db.engine)
    recorder = UsageRecorder(db, MeteringSettings(flush_interval_seconds=60))
    started = replace(event(7), status_code=IN_PROGRESS, completion_tokens=0, stream=True)
    final = replace(event(7), stream=True)

    async def scenario() -> None:
        recorder.record(started)
        await recorder.flush()
        assert count(db) == (1, 0)
        recorder.record(final)
        recorder.record(started)  # a replayed journal: must not undo the final record
        await recorder.flush()
        recorder.record(started)
        await recorder.flush()

    asyncio.run(scenario())
    assert count(db) == (1, 7)
    with db.session() as session:
        assert session.scalar(select(UsageRow.status_code)) == 200


def test_each_finished_request_gets_one_audit_entry_with_its_usage(database_url: str) -> None:
    db = Database(database_url)
    upgrade_to_head(db.engine)
    audit = AuditLog(db, b"s" * 32, keyring_for(db))
    recorder = UsageRecorder(db, MeteringSettings(flush_interval_seconds=60), audit=audit)
    started = replace(event(7), status_code=IN_PROGRESS, completion_tokens=0, stream=True)

    async def scenario() -> None:
        recorder.record(started)
        recorder.record(event(1))
        await recorder.flush()  # the stream is still running: only request 1 is audited
        recorder.record(replace(event(7), stream=True))
        recorder.record(replace(event(2), status_code=429))
        await recorder.flush()
        for replayed in (event(1), replace(event(7), stream=True), started):
            recorder.record(replayed)  # a journal replayed after a crash
        await recorder.flush()

    asyncio.run(scenario())
    entries = [e.as_dict() for e in audit.entries()]
    assert [(e["action"], e["target"], e["outcome"]) for e in entries] == [
        ("inference", "m", "ok"),
        ("inference", "m", "ok"),
        ("inference", "m", "error"),
    ]
    assert [e["details"]["request_id"] for e in entries] == ["req-1", "req-7", "req-2"]
    assert entries[1]["details"]["completion_tokens"] == 7
    assert set(entries[0]["details"]) == {
        "request_id", "endpoint", "status", "stream", "prompt_tokens",
        "completion_tokens", "latency_ms", "model_version", "node",
    }  # fmt: skip
    assert audit.verify().ok
