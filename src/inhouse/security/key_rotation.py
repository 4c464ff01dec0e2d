"""Key rotation as operators see it: status with deadlines, rotate, rewrap, on a schedule."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from inhouse.config import CryptoSettings
from inhouse.security.audit import AuditEvent, AuditLog
from inhouse.security.key_provider import MasterKey
from inhouse.security.keyring import Keyring
from inhouse.security.sealed_columns import (
    RewrapReport,
    records_per_version,
    rewrap,
    stale_records_exist,
)
from inhouse.store.db import Database
from inhouse.store.tables import utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KeyVersionStatus:
    version: int
    algorithm: str
    created_at: datetime
    age: timedelta
    records: int
    current: bool


@dataclass(frozen=True, slots=True)
class CryptoStatus:
    versions: list[KeyVersionStatus]
    unsealed_records: int
    rotation_due_at: datetime
    now: datetime
    warn_before: timedelta

    @property
    def overdue(self) -> bool:
        return self.now >= self.rotation_due_at

    @property
    def warnings(self) -> list[str]:
        found: list[str] = []
        left = self.rotation_due_at - self.now
        if self.overdue:
            found.append(f"rotation is overdue by {_span(-left)}: run inhouse crypto rotate")
        elif left <= self.warn_before:
            found.append(f"rotation is due in {_span(left)}")
        stale = sum(v.records for v in self.versions if not v.current)
        if stale:
            found.append(f"{stale} records are sealed with older keys: run inhouse crypto rewrap")
        if self.unsealed_records:
            found.append(
                f"{self.unsealed_records} records predate encryption: run inhouse crypto rewrap"
            )
        return found


def _span(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} hours"


class KeyRotation:
    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        audit: AuditLog,
        settings: CryptoSettings,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self._keyring = keyring
        self._audit = audit
        self._settings = settings
        self._clock = clock

    @property
    def period(self) -> timedelta:
        return timedelta(days=self._settings.rotation_days)

    def status(self) -> CryptoStatus:
        self._keyring.refresh()
        keys = self._keyring.keys()
        counts = records_per_version(self._db, [key.version for key in keys])
        now = self._clock()
        current = self._keyring.current.version
        return CryptoStatus(
            versions=[
                KeyVersionStatus(
                    version=key.version,
                    algorithm=key.algorithm.value,
                    created_at=key.created_at,
                    age=key.age(now),
                    records=sum(column.get(str(key.version), 0) for column in counts.values()),
                    current=key.version == current,
                )
                for key in keys
            ],
            unsealed_records=sum(column.get("unsealed", 0) for column in counts.values()),
            rotation_due_at=self._keyring.rotation_due_at(self.period),
            now=now,
            warn_before=timedelta(days=self._settings.warn_days_before),
        )

    def rotate(self, actor: str) -> int:
        previous = self._keyring.current.version
        version = self._keyring.rotate().version
        self._audit.record(
            AuditEvent(
                actor,
                "crypto.rotate",
                target=f"data-key:{version}",
                details={"previous": previous, "algorithm": self._keyring.current.algorithm.value},
            )
        )
        return version

    def rewrap(
        self,
        actor: str,
        *,
        batch_size: int | None = None,
        progress: Callable[[str, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> RewrapReport:
        report = rewrap(
            self._db,
            self._keyring,
            batch_size=batch_size or self._settings.rewrap_batch_size,
            progress=progress,
            should_stop=should_stop,
        )
        self._audit.record(
            AuditEvent(
                actor,
                "crypto.rewrap",
                target=f"data-key:{self._keyring.current.version}",
                details={"rewrapped": report.rewrapped, "skipped": report.skipped},
            )
        )
        return report

    def change_master_key(
        self, to: MasterKey, actor: str, should_stop: Callable[[], bool] | None = None
    ) -> int:
        """Re-wrap every data key under the master key ``to``; returns how many are left
        (0: done). Resumable: data keys already under ``to`` are skipped."""
        done, left = self._keyring.rewrap_data_keys(to, should_stop)
        self._audit.record(
            AuditEvent(
                actor,
                "crypto.master_key",
                target=to.source,
                outcome="ok" if left == 0 else "partial",
                details={"rewrapped": done, "left": left},
            )
        )
        return left

    def rotate_if_due(self, should_stop: Callable[[], bool] | None = None) -> int | None:
        """The schedule: rotate when the current key is older than the period. Only the
        replica that made the new key audits it and rewraps (until ``should_stop``). A
        rewrap that stopped midway (a restart, a crash) is taken up again at the next
        check, until no record is left under an older key."""
        rotated = self._keyring.rotate_if_due(self.period)
        if rotated is None:
            if self._settings.rewrap_after_rotation and stale_records_exist(
                self._db, self._keyring
            ):
                report = self.rewrap("system", should_stop=should_stop)
                log.info("resumed a rewrap: %d records re-encrypted", report.total)
            return None
        self._audit.record(
            AuditEvent(
                "system",
                "crypto.rotate",
                target=f"data-key:{rotated.version}",
                details={"scheduled": True},
            )
        )
        log.info("rotated to data key version %d (scheduled)", rotated.version)
        if self._settings.rewrap_after_rotation:
            report = self.rewrap("system", should_stop=should_stop)
            log.info(
                "rewrapped %d records under data key version %d", report.total, rotated.version
            )
        return rotated.version
