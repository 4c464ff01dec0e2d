"""Data keys: made, wrapped by the master key, stored, rotated; records sealed with them.

Every data key has a version; the newest seals new records, every older one keeps
opening what it sealed until ``inhouse crypto rewrap`` re-seals those records with the
newest. Data keys are stored wrapped (sealed with a key derived from the master key),
so the database alone opens nothing. At start-up every stored data key is unwrapped:
a wrong master key fails there, loudly, and never later on a record.
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
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self._master = master
        self._algorithm = algorithm
        self._clock = clock
        self._keys: dict[int, DataKey] = {}
        self._lock = threading.Lock()
        self.refresh()
        if not self._keys:
            self.rotate()

    # -- keys ---------------------------------------------------------------------------

    def _wrapping_key(self, algorithm: CipherAlgorithm) -> bytes:
        return derive_key(self._master.material, algorithm, _WRAP_PURPOSE)

    def _unwrap(self, row: DataKeyRow) -> DataKey:
        algorithm = CipherAlgorithm(row.algorithm)
        try:
            material = open_sealed(
                self._wrapping_key(algorithm), row.wrapped, f"data-key:{row.version}"
            )
        except DecryptionError:
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
            ) from None
        return DataKey(row.version, algorithm, as_utc(row.created_at), material)

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
        wrapped = seal(
            self._wrapping_key(self._algorithm),
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
