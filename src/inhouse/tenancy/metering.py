"""Usage metering: every request's tokens, written in batches off the request path.

``record`` appends the event to the usage journal (a local file, before the response
goes out) and to a list; a background task writes batches to the database, and
``close`` writes whatever is left (the server calls it on shutdown, SIGTERM
included). A failed write keeps its batch for the next try; whatever is not in the
database when the process ends, by SIGKILL too, stays in the journal and the next
start replays it. Writes are idempotent (one row per request id), so a replay never
counts twice. With an audit log, each finished request also gets its audit entry
(metadata only) in the same transaction as its usage row. A stream is recorded when it
starts (status 0, in progress) and again when it ends; the final record replaces the
first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from inhouse.config import MeteringSettings
from inhouse.security.audit import AuditEvent, AuditLog
from inhouse.store.db import Database
from inhouse.store.tables import UsageRow
from inhouse.tenancy.usage_journal import UsageJournal

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
    model_version: str = ""
    node: str = ""


IN_PROGRESS = 0
"""The status of a stream's first record: started, not yet finished."""

_COLUMNS = tuple(field.name for field in fields(UsageEvent))
_WRITE_ATTEMPTS = 20


class UsageRecorder:
    def __init__(
        self,
        db: Database,
        settings: MeteringSettings,
        journal: UsageJournal | None = None,
        *,
        audit: AuditLog | None = None,
    ) -> None:
        self._db = db
        self._audit = audit
        self._settings = settings
        self._journal = journal
        self._pending: list[UsageEvent] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def record(self, event: UsageEvent) -> None:
        if self._journal is not None:
            self._journal.append(_to_json(event))
        self._pending.append(event)
        if len(self._pending) >= self._settings.batch_size:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        if self._journal is not None:
            self._pending[:0] = [_from_json(record) for record in self._journal.open()]
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
        try:
            mark = self._journal.seal() if self._journal is not None else 0
        except OSError:
            log.exception("starting a new usage journal segment failed; writing later")
            return
        batch, self._pending = self._pending, []
        try:
            await asyncio.to_thread(self._write, batch)
        except Exception:
            log.exception(
                "writing %d usage records failed; keeping them for the next try", len(batch)
            )
            self._pending[:0] = batch
            return
        if self._journal is not None:
            self._journal.discard_sealed(mark)

    def _write(self, batch: list[UsageEvent]) -> None:
        events = _latest(batch)
        for attempt in range(_WRITE_ATTEMPTS):
            try:
                with self._db.engine.begin() as connection:
                    self._write_in(connection, events)
                return
            except IntegrityError:
                # Another replica appended to the audit chain at the same moment.
                if attempt == _WRITE_ATTEMPTS - 1:
                    raise

    def _write_in(self, connection: Connection, events: list[UsageEvent]) -> None:
        """Usage rows and, for requests that just finished, their audit entries: one
        transaction, so a replayed journal neither loses nor doubles either."""
        finished_before: set[str] = set()
        if self._audit is not None:
            finished_before = set(
                connection.scalars(
                    select(UsageRow.request_id).where(
                        UsageRow.request_id.in_([e.request_id for e in events]),
                        UsageRow.status_code != IN_PROGRESS,
                    )
                )
            )
        rows = [{name: getattr(event, name) for name in _COLUMNS} for event in events]
        dialect = postgresql if self._db.engine.dialect.name == "postgresql" else sqlite
        insert = dialect.insert(UsageRow)
        statement = insert.on_conflict_do_update(
            index_elements=["request_id"],
            set_={name: insert.excluded[name] for name in _COLUMNS if name != "request_id"},
            where=UsageRow.status_code == IN_PROGRESS,
        )
        connection.execute(statement, rows)
        if self._audit is not None:
            self._audit.append_in(
                connection,
                [
                    _audit_event(event)
                    for event in events
                    if event.status_code != IN_PROGRESS and event.request_id not in finished_before
                ],
            )

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        await self.flush()
        if self._pending:
            log.error(
                "%d usage records could not be written; the usage journal keeps them "
                "for the next start",
                len(self._pending),
            )
        if self._journal is not None:
            self._journal.close(written=not self._pending)
        self._pending = []


def _audit_event(event: UsageEvent) -> AuditEvent:
    """What the audit chain keeps of an inference: metadata, never its content."""
    return AuditEvent(
        actor=event.key_id,
        action="inference",
        tenant_id=event.tenant_id,
        target=event.model,
        outcome="ok" if event.status_code < 400 else "error",
        details={
            "request_id": event.request_id,
            "endpoint": event.endpoint,
            "status": event.status_code,
            "stream": event.stream,
            "prompt_tokens": event.prompt_tokens,
            "completion_tokens": event.completion_tokens,
            "latency_ms": round(event.latency_ms, 1),
            "model_version": event.model_version,
            "node": event.node,
        },
    )


def _latest(batch: list[UsageEvent]) -> list[UsageEvent]:
    """One event per request: the final one wins over a stream's in-progress record."""
    latest: dict[str, UsageEvent] = {}
    for event in batch:
        seen = latest.get(event.request_id)
        if seen is None or seen.status_code == IN_PROGRESS or event.status_code != IN_PROGRESS:
            latest[event.request_id] = event
    return list(latest.values())


def _to_json(event: UsageEvent) -> dict[str, Any]:
    values = {name: getattr(event, name) for name in _COLUMNS}
    values["created_at"] = event.created_at.isoformat()
    return values


def _from_json(values: dict[str, Any]) -> UsageEvent:
    values["created_at"] = datetime.fromisoformat(values["created_at"])
    return UsageEvent(**values)
