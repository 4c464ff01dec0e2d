"""Data keys: made, wrapped by the master key, stored, rotated; records sealed with them.

Every data key has a version; the newest seals new records, every older one keeps
opening what it sealed until ``inhouse crypto rewrap`` re-seals those records with the
newest. Data keys are stored wrapped (sealed with a key derived from the master key),
so the database alone opens nothing. At start-up every stored data key is unwrapped:
a wrong master key fails there, loudly, and never later on a record.

Changing the master key (``rewrap_data_keys``) re-wraps each data key under the new one,
one row per transaction. While it is under way (or after it stopped midway) a data key
opens with either key, so nothing is lost, and running it again finishes the job.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from inhouse.config import CipherAlgorithm
from inhouse.errors import ConfigurationError
from inhouse.security.envelope import (
    DecryptionError,
    Header,
    derive_key,
    open_sealed,
    read_header,
    seal,
)
from inhouse.security.key_provider import MasterKey
from inhouse.store.db import Database
from inhouse.store.tables import DataKeyRow, as_utc, utcnow

_WRAP_PURPOSE = "data-key wrapping"


@dataclass(frozen=True, slots=True)
class DataKey:
    version: int
    algorithm: CipherAlgorithm
    created_at: datetime
    material: bytes

    @property
    def header(self) -> Header:
        return Header(self.version, self.algorithm)

    def age(self, now: datetime) -> timedelta:
        return now - self.created_at


class Keyring:
    """The data keys of one store, unwrapped in memory."""

    def __init__(
        self,
        db: Database,
        master: MasterKey,
        algorithm: CipherAlgorithm,
        *,
        next_master: MasterKey | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self._master = master
        self._next_master = next_master
        self._algorithm = algorithm
        self._clock = clock
        self._keys: dict[int, DataKey] = {}
        self._lock = threading.Lock()
        self.refresh()
        if not self._keys:
            self.rotate()

    # -- keys ---------------------------------------------------------------------------

    def _wrapping_key(self, algorithm: CipherAlgorithm, master: MasterKey | None = None) -> bytes:
        return derive_key((master or self._master).material, algorithm, _WRAP_PURPOSE)

    def _open_with(self, master: MasterKey | None, row: DataKeyRow) -> bytes | None:
        if master is None:
            return None
        key = self._wrapping_key(CipherAlgorithm(row.algorithm), master)
        try:
            return open_sealed(key, row.wrapped, f"data-key:{row.version}")
        except DecryptionError:
            return None

    def _unwrap(self, row: DataKeyRow) -> DataKey:
        algorithm = CipherAlgorithm(row.algorithm)
        material = self._open_with(self._master, row) or self._open_with(self._next_master, row)
        if material is None:
            hint = (
                " It was created just now: restore the master key these data keys were "
                "wrapped with, and remove the new one."
                if self._master.created_now
                else ""
            )
            raise ConfigurationError(
                f"the master key from {self._master.source} does not open data key "
                f"version {row.version}: this is not the master key this store was "
                f"encrypted with.{hint}"
            )
        return DataKey(row.version, algorithm, as_utc(row.created_at), material)

    def rewrap_data_keys(
        self, to: MasterKey, should_stop: Callable[[], bool] | None = None
    ) -> tuple[int, int]:
        """Re-wrap every data key under the master key ``to``, one per transaction; returns
        how many were re-wrapped now and how many are left (stopped early). Keys already
        under ``to`` are skipped, so a run that stopped midway is finished by the next."""
        done = left = 0
        with self._db.session() as session:
            versions = list(
                session.scalars(select(DataKeyRow.version).order_by(DataKeyRow.version))
            )
        for version in versions:
            if should_stop is not None and should_stop():
                left += 1
                continue
            with self._db.session() as session:
                row = session.get(DataKeyRow, version)
                if row is None or self._open_with(to, row) is not None:
                    continue
                key = self._unwrap(row)
                row.wrapped = seal(
                    self._wrapping_key(key.algorithm, to),
                    key.header,
                    key.material,
                    f"data-key:{version}",
                )
                done += 1
        return done, left

    def refresh(self) -> None:
        """Load data keys made since (by ``inhouse crypto rotate`` or another replica)."""
        with self._db.session() as session:
            rows = session.scalars(
                select(DataKeyRow).where(DataKeyRow.version > max(self._keys, default=0))
            ).all()
            loaded = {row.version: self._unwrap(row) for row in rows}
        if loaded:
            with self._lock:
                self._keys = {**self._keys, **loaded}

    @property
    def current(self) -> DataKey:
        return self._keys[max(self._keys)]

    def keys(self) -> list[DataKey]:
        return [self._keys[version] for version in sorted(self._keys)]

    def rotate(self) -> DataKey:
        """Make a new data key and seal with it from now on; returns the newest key (made
        by another process if it rotated at the same moment)."""
        self._make_key()
        return self.current

    def _make_key(self) -> bool:
        """Insert the next version; False if another process took that version first."""
        version = self._next_version()
        material = secrets.token_bytes(self._algorithm.key_bytes)
        # During a change of master key, new data keys are wrapped under the new one.
        wrapped = seal(
            self._wrapping_key(self._algorithm, self._next_master),
            Header(version, self._algorithm),
            material,
            f"data-key:{version}",
        )
        try:
            with self._db.session() as session:
                session.add(
                    DataKeyRow(
                        version=version,
                        algorithm=self._algorithm.value,
                        wrapped=wrapped,
                        created_at=self._clock(),
                    )
                )
        except IntegrityError:
            self.refresh()  # another process rotated at the same moment: use its key
            return False
        self.refresh()
        return True

    def _next_version(self) -> int:
        with self._db.session() as session:
            highest = session.scalar(select(func.max(DataKeyRow.version)))
        return (highest or 0) + 1

    def rotation_due_at(self, period: timedelta) -> datetime:
        return self.current.created_at + period

    def rotate_if_due(self, period: timedelta) -> DataKey | None:
        """Rotate if the current key is older than ``period``; the new key, if this
        process made it (None when not due, or when another replica rotated first)."""
        self.refresh()
        if self._clock() < self.rotation_due_at(period):
            return None
        return self.current if self._make_key() else None

    # -- records ------------------------------------------------------------------------

    def encrypt(self, plaintext: str | bytes, context: str) -> str:
        key = self.current
        data = plaintext.encode() if isinstance(plaintext, str) else plaintext
        return seal(key.material, key.header, data, context)

    def decrypt(self, value: str, context: str) -> bytes:
        """Open a sealed value; raises DecryptionError if it was changed or moved."""
        version = read_header(value).version
        key = self._keys.get(version)
        if key is None:
            self.refresh()
            key = self._keys.get(version)
            if key is None:
                raise DecryptionError(f"no data key version {version} in this store")
        return open_sealed(key.material, value, context)

    def decrypt_text(self, value: str, context: str) -> str:
        return self.decrypt(value, context).decode()
