"""Usage metering: every request's tokens, written in batches off the request path.

``record`` only appends to a list; a background task writes batches, and ``close``
writes whatever is left (the server calls it on shutdown, SIGTERM included). A
failed write keeps its batch for the next try.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, fields
from datetime import datetime

from sqlalchemy import insert

from inhouse.config import MeteringSettings
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
    def __init__(self, db: Database, settings: MeteringSettings) -> None:
        self._db = db
        self._settings = settings
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
        with self._db.engine.begin() as connection:
            connection.execute(insert(UsageRow), rows)

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        await self.flush()
