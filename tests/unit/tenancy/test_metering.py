from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import func, select

from inhouse.config import MeteringSettings
from inhouse.store.db import Database
from inhouse.store.migrate import upgrade_to_head
from inhouse.store.tables import UsageRow
from inhouse.tenancy.metering import UsageEvent, UsageRecorder


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


def test_a_failed_write_keeps_the_batch(tmp_path) -> None:  # type: ignore[no-untyped-def]
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


def test_records_that_cannot_be_written_at_shutdown_are_spooled_and_replayed(
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    spool = tmp_path / "usage-spool.jsonl"
    settings = MeteringSettings(flush_interval_seconds=60, batch_size=100)

    async def shut_down_without_database() -> None:
        recorder = UsageRecorder(db, settings, spool_path=spool)
        recorder.start()
        for n in range(5):
            recorder.record(event(n))
        await recorder.close()  # no tables: the write fails, the spool keeps them

    asyncio.run(shut_down_without_database())
    assert oct(spool.stat().st_mode & 0o777) == "0o600"
    upgrade_to_head(db.engine)

    async def restart() -> None:
        recorder = UsageRecorder(db, settings, spool_path=spool)
        recorder.start()
        recorder.record(event(1))  # the same request again: never counted twice
        await recorder.close()

    asyncio.run(restart())
    assert count(db) == (5, sum(range(5)))
    assert not spool.exists()
