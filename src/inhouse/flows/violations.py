"""Suspending end users whose inputs flows keep blocking.

China's generative-AI rules ask a provider to act against users who keep submitting
illegal input. An end user (the request's ``user`` field, else the API key) whose inputs
a flow's pre steps block ``violations_in_a_row`` times in a row, or
``violations_per_day`` times in one UTC day, is suspended from the tenant's flows for
``suspension_minutes``; the suspension is audited (``flow.user_suspend``). The counters
live in the database, so every gateway replica applies them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import case, select, update
from sqlalchemy.exc import IntegrityError

from inhouse.config import FlowSettings
from inhouse.errors import PermissionDeniedError
from inhouse.security.audit import AuditEvent, AuditLog
from inhouse.store.db import Database
from inhouse.store.tables import FlowViolationRow, as_utc, utcnow


def stored_subject(subject: str) -> str:
    """A user id as stored: long ones (the column holds 256) by their SHA-256."""
    if len(subject) <= 200:
        return subject
    return "sha256:" + hashlib.sha256(subject.encode()).hexdigest()


class ViolationCounter:
    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        settings: FlowSettings,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self._audit = audit
        self._settings = settings
        self._clock = clock

    def check(self, tenant_id: str, subject: str) -> None:
        """Raise 403 ``user_suspended`` while the subject is suspended."""
        subject = stored_subject(subject)
        with self._db.session() as session:
            row = session.get(FlowViolationRow, (tenant_id, subject))
            until = row.suspended_until if row is not None else None
        if until is not None and as_utc(until) > self._clock():
            raise PermissionDeniedError(
                f"This user is suspended until {as_utc(until).isoformat(timespec='seconds')} "
                "after repeated inputs that were refused.",
                param="user",
                code="user_suspended",
            )

    def record(self, tenant_id: str, subject: str, *, blocked: bool) -> None:
        """Count one input: blocked or not. Only writes when something changes."""
        subject = stored_subject(subject)
        for attempt in range(3):
            try:
                self._record(tenant_id, subject, blocked)
                return
            except IntegrityError:  # another replica counted this subject's first one
                if attempt == 2:
                    raise

    def _record(self, tenant_id: str, subject: str, blocked: bool) -> None:
        now = self._clock()
        today = now.date()
        key = (FlowViolationRow.tenant_id == tenant_id) & (FlowViolationRow.subject == subject)
        with self._db.session() as session:
            if not blocked:
                session.execute(
                    update(FlowViolationRow)
                    .where(key, FlowViolationRow.in_a_row > 0)
                    .values(in_a_row=0)
                    .execution_options(synchronize_session=False)
                )
                return
            # Counted in the database, in one statement: concurrent requests (threads,
            # replicas) never lose a count.
            counted = session.execute(
                update(FlowViolationRow)
                .where(key)
                .values(
                    in_a_row=FlowViolationRow.in_a_row + 1,
                    on_day=case(
                        (FlowViolationRow.day == today, FlowViolationRow.on_day + 1), else_=1
                    ),
                    day=today,
                )
                .execution_options(synchronize_session=False)
            )
            if counted.rowcount == 0:  # type: ignore[attr-defined]
                session.add(
                    FlowViolationRow(
                        tenant_id=tenant_id, subject=subject, in_a_row=1, day=today, on_day=1
                    )
                )
                session.flush()
            row = session.execute(
                select(FlowViolationRow.in_a_row, FlowViolationRow.on_day).where(key)
            ).one()
            in_a_row, on_day = int(row[0]), int(row[1])
            settings = self._settings
            if in_a_row < settings.violations_in_a_row and on_day < settings.violations_per_day:
                return
            session.execute(
                update(FlowViolationRow)
                .where(key)
                .values(
                    suspended_until=now + timedelta(minutes=settings.suspension_minutes),
                    in_a_row=0,
                )
                .execution_options(synchronize_session=False)
            )
        self._audit.record(
            AuditEvent(
                "system",
                "flow.user_suspend",
                tenant_id,
                target=f"user:{subject}",
                details={
                    "in_a_row": in_a_row,
                    "today": on_day,
                    "minutes": self._settings.suspension_minutes,
                },
            )
        )
