"""Usage metering: every request's tokens, written in batches off the request path.

``record`` only appends to a list; a background task writes batches, and ``close``
writes whatever is left (the server calls it on shutdown, SIGTERM included). A
failed write keeps its batch for the next try; if the database is still unreachable
at shutdown, the records go to a private spool file that the next start replays.
Writes are idempotent (one row per request id), so a replay never counts twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite

from inhouse.config import MeteringSettings
from inhouse.security.secret_file import write_private_file
from inhouse.store.db import Database
from inhouse.store.tables import UsageRow

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UsageEvent:
    request_id: str
    created_at: datetime
    tenant_id: str
    key_id: str
    model: str
    endpoint: str
    stream: bool
    status_code: int
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float


_COLUMNS = tuple(field.name for field in fields(UsageEvent))


class UsageRecorder:
    def __init__(
        self, db: Database, settings: MeteringSettings, spool_path: Path | None = None
    ) -> None:
        self._db = db
        self._settings = settings
        self._spool_path = spool_path
        self._pending: list[UsageEvent] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def record(self, event: UsageEvent) -> None:
        self._pending.append(event)
        if len(self._pending) >= self._settings.batch_size:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._pending[:0] = self._read_spool()
        self._task = asyncio.create_task(self._run(), name="usage-recorder")

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._wake.wait(), timeout=self._settings.flush_interval_seconds
                )
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        try:
            await asyncio.to_thread(self._write, batch)
        except Exception:
            log.exception(
                "writing %d usage records failed; keeping them for the next try", len(batch)
            )
            self._pending[:0] = batch

    def _write(self, batch: list[UsageEvent]) -> None:
        rows = [{name: getattr(event, name) for name in _COLUMNS} for event in batch]
        dialect = postgresql if self._db.engine.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(UsageRow).on_conflict_do_nothing(index_elements=["request_id"])
        with self._db.engine.begin() as connection:
            connection.execute(statement, rows)

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        await self.flush()
        if self._pending and self._spool_path is not None:
            self._write_spool(self._pending)
            log.error(
                "%d usage records could not be written; kept in %s for the next start",
                len(self._pending),
                self._spool_path,
            )
            self._pending = []

    def _write_spool(self, events: list[UsageEvent]) -> None:
        assert self._spool_path is not None
        lines = [json.dumps(_to_json(event)) for event in events]
        previous = self._spool_path.read_text() if self._spool_path.exists() else ""
        self._spool_path.unlink(missing_ok=True)
        write_private_file(self._spool_path, previous + "\n".join(lines) + "\n")

    def _read_spool(self) -> list[UsageEvent]:
        if self._spool_path is None or not self._spool_path.exists():
            return []
        events = [
            _from_json(json.loads(line))
            for line in self._spool_path.read_text().splitlines()
            if line.strip()
        ]
        # Replayed into memory: written with the next batch, or spooled again at close.
        self._spool_path.unlink()
        log.warning("replaying %d spooled usage records", len(events))
        return events


def _to_json(event: UsageEvent) -> dict[str, Any]:
    values = {name: getattr(event, name) for name in _COLUMNS}
    values["created_at"] = event.created_at.isoformat()
    return values


def _from_json(values: dict[str, Any]) -> UsageEvent:
    values["created_at"] = datetime.fromisoformat(values["created_at"])
    return UsageEvent(**values)
