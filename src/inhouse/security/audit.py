"""The audit log: an append-only hash chain (HMAC-SM3) of admin actions and key events.

Each entry's hash covers the previous entry's hash and every field of its own, its
sequence number included, keyed with a key derived from the server secret, so that
someone who can write to the database but does not hold the secret cannot forge a
consistent chain. ``verify`` finds the first entry that was edited, deleted or moved:
an edited entry no longer matches its hash, a deleted one leaves a gap in the sequence,
and entries moved or swapped break the link to their predecessor.
Appends from any number of processes serialise on the sequence number (a primary key):
a writer that loses the race reads the new head and tries again.

Details are sealed at rest with the current data key (context ``audit:<seq>``); the
hash covers their plain text, so rewrapping them under a newer key leaves the chain
intact, while a sealed value that was changed no longer opens and is reported.

Retention deletes the oldest entries (``prune``) after chaining an ``audit.prune`` entry
that names the last deleted entry and its hash, so the shortened chain still verifies
and a deletion at its start that no prune accounts for is found.

What the chain cannot show on its own is the loss of its newest entries: checkpoints of
its head, kept outside the database (``audit_anchor``), show that.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from cryptography.hazmat.primitives import hashes, hmac
from sqlalchemy import Connection, delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from inhouse.security.envelope import DecryptionError, is_sealed
from inhouse.security.keyring import Keyring
from inhouse.security.sealed_columns import audit_details_context
from inhouse.store.db import Database
from inhouse.store.tables import AuditRow, as_utc

GENESIS = "0" * 64
"""The previous hash of the first entry."""

_APPEND_ATTEMPTS = 50


T = TypeVar("T")


class _ChainTaken(Exception):
    """Another writer appended to the chain while a change was being recorded."""


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """What happened, before it is chained."""

    actor: str
    """Who: a key id (``key_…``), or ``cli:<user>`` for the command line."""
    action: str
    """What, as ``noun.verb``: ``tenant.create``, ``key.revoke``, ``quota.update`` …"""
    tenant_id: str | None = None
    target: str = ""
    outcome: str = "ok"
    details: dict[str, Any] = field(default_factory=dict)
    """Metadata only: never prompts, answers or secrets."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    created_at: datetime
    actor: str
    tenant_id: str | None
    action: str
    target: str
    outcome: str
    details: str
    prev_hash: str
    hash: str

    def stored_fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def as_dict(self) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in self.__slots__}
        values["created_at"] = _timestamp(self.created_at)
        values["details"] = json.loads(self.details)
        return values


@dataclass(frozen=True, slots=True)
class Verification:
    checked: int
    first_bad_seq: int | None = None
    problem: str = ""

    @property
    def ok(self) -> bool:
        return self.first_bad_seq is None


def _timestamp(moment: datetime) -> str:
    """One spelling of a moment, whatever the database hands back (SQLite drops the zone)."""
    return as_utc(moment).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def chain_key(server_secret: bytes) -> bytes:
    """The chain's own key, derived from the server secret."""
    mac = hmac.HMAC(server_secret, hashes.SM3())
    mac.update(b"inhouse audit chain v1")
    return mac.finalize()


def chain_hash(key: bytes, prev_hash: str, row: AuditRow | AuditEntry) -> str:
    fields = [
        prev_hash,
        str(row.seq),
        _timestamp(row.created_at),
        row.actor,
        row.tenant_id or "",
        row.action,
        row.target,
        row.outcome,
        row.details,
    ]
    mac = hmac.HMAC(key, hashes.SM3())
    mac.update(json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode())
    return mac.finalize().hex()


def _entry(row: AuditRow, details: str) -> AuditEntry:
    return AuditEntry(
        seq=row.seq,
        created_at=row.created_at,
        actor=row.actor,
        tenant_id=row.tenant_id,
        action=row.action,
        target=row.target,
        outcome=row.outcome,
        details=details,
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


class AuditLog:
    def __init__(self, db: Database, server_secret: bytes, keyring: Keyring) -> None:
        self._db = db
        self._key = chain_key(server_secret)
        self._keyring = keyring

    def _open_details(self, row: AuditRow) -> str:
        """The plain details of a row; raises DecryptionError if they were tampered with."""
        if not is_sealed(row.details):
            return row.details  # written before encryption at rest; rewrap seals it
        return self._keyring.decrypt_text(row.details, audit_details_context(row.seq))

    def _entry(self, row: AuditRow) -> AuditEntry:
        return _entry(row, self._open_details(row))

    def _readable_entry(self, row: AuditRow) -> AuditEntry:
        """For listings: an entry whose details were tampered with says so instead."""
        try:
            return self._entry(row)
        except DecryptionError:
            return _entry(row, json.dumps({"error": "details changed: they do not decrypt"}))

    def record(self, event: AuditEvent) -> AuditEntry:
        """Append one entry to the chain; returns it with its sequence number and hash."""
        for _ in range(_APPEND_ATTEMPTS):
            try:
                with self._db.engine.begin() as connection:
                    return self.append_in(connection, [event])[0]
            except IntegrityError:
                continue  # another writer took this sequence number: chain onto its entry
        raise RuntimeError("could not append to the audit chain: too much contention")

    def audited(self, change: Callable[[Session], tuple[T, AuditEvent | None]]) -> T:
        """Make a change and chain its audit entry in one transaction: both are committed
        or neither is. ``change`` does its writes on the session it is given and returns
        its result and the event (None: nothing changed, nothing to record). It runs
        again when another writer took the chain's next number meanwhile, so it must not
        act outside the session; its own integrity errors (a taken name) pass through."""
        for _ in range(_APPEND_ATTEMPTS):
            try:
                with self._db.session() as session:
                    result, event = change(session)
                    session.flush()
                    if event is not None:
                        try:
                            self.append_in(session.connection(), [event])
                        except IntegrityError as exc:
                            raise _ChainTaken from exc
                    return result
            except _ChainTaken:
                continue
        raise RuntimeError("could not append to the audit chain: too much contention")

    def append_in(self, connection: Connection, events: Sequence[AuditEvent]) -> list[AuditEntry]:
        """Append entries inside the caller's transaction: they land with its other writes
        or not at all. Raises IntegrityError when another writer appended meanwhile; the
        caller retries the whole transaction."""
        head = connection.execute(
            select(AuditRow.seq, AuditRow.hash).order_by(AuditRow.seq.desc()).limit(1)
        ).first()
        seq, prev_hash = (head[0], head[1]) if head is not None else (0, GENESIS)
        now = datetime.now(UTC)
        entries, rows = [], []
        for event in events:
            seq += 1
            details = json.dumps(event.details, ensure_ascii=False, sort_keys=True, default=str)
            entry = AuditEntry(
                seq=seq,
                created_at=now,
                actor=event.actor[:128],
                tenant_id=event.tenant_id,
                action=event.action,
                target=event.target[:256],
                outcome=event.outcome,
                details=details,
                prev_hash=prev_hash,
                hash="",
            )
            entry = replace(entry, hash=chain_hash(self._key, prev_hash, entry))
            sealed = self._keyring.encrypt(details, audit_details_context(seq))
            rows.append({**entry.stored_fields(), "details": sealed})
            entries.append(entry)
            prev_hash = entry.hash
        if rows:
            connection.execute(insert(AuditRow), rows)
        return entries

    def entry(self, seq: int) -> AuditEntry | None:
        """Entry ``seq``, or None when there is none (pruned, deleted, not yet written)."""
        with self._db.session() as session:
            row = session.get(AuditRow, seq)
            return None if row is None else self._readable_entry(row)

    def head(self) -> AuditEntry | None:
        with self._db.session() as session:
            row = session.scalars(select(AuditRow).order_by(AuditRow.seq.desc()).limit(1)).first()
            return None if row is None else self._readable_entry(row)

    def entries(
        self,
        *,
        tenant_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[AuditEntry]:
        """Entries in chain order; ``tenant_id`` keeps one tenant's, ``until`` is exclusive."""
        query = select(AuditRow).order_by(AuditRow.seq)
        if tenant_id is not None:
            query = query.where(AuditRow.tenant_id == tenant_id)
        if since is not None:
            query = query.where(AuditRow.created_at >= since)
        if until is not None:
            query = query.where(AuditRow.created_at < until)
        if limit is not None:
            query = query.limit(limit)
        with self._db.session() as session:
            return [self._readable_entry(row) for row in session.scalars(query)]

    def prune(self, before: datetime) -> int:
        """Delete the entries older than ``before`` (retention), oldest first, and chain an
        ``audit.prune`` entry naming the last one removed and its hash. Returns how many."""
        with self._db.session() as session:
            last = session.scalars(
                select(AuditRow)
                .where(AuditRow.created_at < before)
                .order_by(AuditRow.seq.desc())
                .limit(1)
            ).first()
            if last is None:
                return 0
            through, anchor = last.seq, last.hash
        # The prune entry goes in first: if deleting fails, the chain still verifies.
        self.record(
            AuditEvent(
                "system",
                "audit.prune",
                details={"through_seq": through, "last_hash": anchor, "before": before.isoformat()},
            )
        )
        with self._db.session() as session:
            result = session.execute(delete(AuditRow).where(AuditRow.seq <= through))
        return int(result.rowcount)  # type: ignore[attr-defined]

    def _pruned_through(self, seq: int) -> str | None:
        """The hash that the prune ending at entry ``seq`` recorded, if there is one."""
        with self._db.session() as session:
            rows = session.scalars(
                select(AuditRow).where(AuditRow.action == "audit.prune").order_by(AuditRow.seq)
            ).all()
        for row in reversed(rows):
            try:
                details = json.loads(self._open_details(row))
            except (DecryptionError, ValueError):
                continue
            if details.get("through_seq") == seq:
                return str(details.get("last_hash"))
        return None

    def _all_rows(self, *, after: int = 0, batch: int = 1000) -> Iterator[AuditRow]:
        last = after
        while True:
            with self._db.session() as session:
                rows = session.scalars(
                    select(AuditRow).where(AuditRow.seq > last).order_by(AuditRow.seq).limit(batch)
                ).all()
                session.expunge_all()
            if not rows:
                return
            yield from rows
            last = rows[-1].seq

    def verify(self) -> Verification:
        """Walk the whole chain; name the first entry that was edited, deleted or moved.

        A chain whose oldest entries were removed by retention starts where an
        ``audit.prune`` entry, itself in the chain, says it does, with the hash it names.
        """
        expected_seq, prev_hash, checked = 1, GENESIS, 0
        with self._db.session() as session:
            first = session.scalars(select(AuditRow).order_by(AuditRow.seq).limit(1)).first()
        if first is not None and first.seq != 1:
            if self._pruned_through(first.seq - 1) != first.prev_hash:
                return Verification(
                    0, 1, f"entries 1 to {first.seq - 1} are missing and no prune accounts for them"
                )
            expected_seq, prev_hash = first.seq, first.prev_hash
        for row in self._all_rows(after=expected_seq - 1):
            if row.seq != expected_seq:
                return Verification(
                    checked,
                    expected_seq,
                    f"entry {expected_seq} is missing (the next entry is {row.seq})",
                )
            if row.prev_hash != prev_hash:
                return Verification(
                    checked, row.seq, f"entry {row.seq} does not follow entry {row.seq - 1}"
                )
            try:
                entry = self._entry(row)
            except DecryptionError:
                return Verification(checked, row.seq, f"entry {row.seq} was changed (details)")
            if chain_hash(self._key, prev_hash, entry) != row.hash:
                return Verification(checked, row.seq, f"entry {row.seq} was changed")
            checked += 1
            expected_seq, prev_hash = row.seq + 1, row.hash
        return Verification(checked)
