"""Suspending end users whose inputs flows keep blocking.

China's generative-AI rules ask a provider to act against users who keep submitting
illegal input. An end user (the request's ``user`` field, else the API key) whose inputs
a flow's pre steps block ``violations_in_a_row`` times in a row, or
``violations_per_day`` times in one UTC day, is suspended from the tenant's flows for
``suspension_minutes``; the suspension is audited (``flow.user_suspend``). The counters
live in the database, so every gateway replica applies them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import IntegrityError

from inhouse.config import FlowSettings
from inhouse.errors import PermissionDeniedError
from inhouse.security.audit import AuditEvent, AuditLog
from inhouse.store.db import Database
from inhouse.store.tables import FlowViolationRow, utcnow


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


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
        with self._db.session() as session:
            row = session.get(FlowViolationRow, (tenant_id, subject))
            until = row.suspended_until if row is not None else None
        if until is not None and _aware(until) > self._clock():
            raise PermissionDeniedError(
                f"This user is suspended until {_aware(until).isoformat(timespec='seconds')} "
                "after repeated inputs that were refused.",
                param="user",
                code="user_suspended",
            )

    def record(self, tenant_id: str, subject: str, *, blocked: bool) -> None:
        """Count one input: blocked or not. Only writes when something changes."""
        for attempt in range(3):
            try:
                self._record(tenant_id, subject, blocked)
                return
            except IntegrityError:  # another replica counted this subject's first one
                if attempt == 2:
                    raise

    def _record(self, tenant_id: str, subject: str, blocked: bool) -> None:
        now = self._clock()
        suspended: tuple[int, int] | None = None
        with self._db.session() as session:
            row = session.get(FlowViolationRow, (tenant_id, subject), with_for_update=True)
            if not blocked:
                if row is not None and row.in_a_row:
                    row.in_a_row = 0
                return
            if row is None:
                row = FlowViolationRow(
                    tenant_id=tenant_id, subject=subject, in_a_row=0, day=now.date(), on_day=0
                )
                session.add(row)
            if row.day != now.date():
                row.day, row.on_day = now.date(), 0
            row.in_a_row += 1
            row.on_day += 1
            settings = self._settings
            if (
                row.in_a_row >= settings.violations_in_a_row
                or row.on_day >= settings.violations_per_day
            ):
                row.suspended_until = now + timedelta(minutes=settings.suspension_minutes)
                suspended = (row.in_a_row, row.on_day)
                row.in_a_row = 0
        if suspended is not None:
            self._audit.record(
                AuditEvent(
                    "system",
                    "flow.user_suspend",
                    tenant_id,
                    target=f"user:{subject}",
                    details={
                        "in_a_row": suspended[0],
                        "today": suspended[1],
                        "minutes": self._settings.suspension_minutes,
                    },
                )
            )
