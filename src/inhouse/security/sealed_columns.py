"""The columns sealed at rest, how many records each data key holds, and rewrapping.

Rewrapping re-seals, in batches of one transaction each, every value of a sealed
column that an older data key (or none: rows from before encryption) sealed, with
the current key. A row is written only if it still holds the value that was read,
so rewrapping runs beside a serving gateway without losing a concurrent change, and
it is resumable by construction: a stopped run leaves only rows still to do, and the
next run picks exactly those.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Column, Table, and_, func, not_, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from inhouse.security.envelope import FORMAT, is_sealed, version_prefix
from inhouse.security.keyring import Keyring
from inhouse.store.db import Database
from inhouse.store.tables import AuditRow, ModelRow, UserRow

UNSEALED = "unsealed"


@dataclass(frozen=True, slots=True)
class SealedColumn:
    table: Table
    key_name: str
    value_name: str
    context: Callable[..., str]
    """The context a row's value is sealed under, from the row's key (and ``bound_to``)."""
    seal_plaintext: bool = True
    """Seal values written before encryption existed (plain text) when rewrapping."""
    bound_to: tuple[str, ...] = ()
    """More columns of the row the context names: a value moved to a row that differs in
    them (a model entry pointed at another URL) no longer opens."""

    @property
    def name(self) -> str:
        return f"{self.table.name}.{self.value_name}"

    @property
    def key(self) -> Column[Any]:
        return self.table.c[self.key_name]

    @property
    def value(self) -> Column[Any]:
        return self.table.c[self.value_name]


def audit_details_context(seq: Any) -> str:
    return f"audit:{seq}"


def model_api_key_context(model_id: Any, url: Any) -> str:
    """An upstream's key opens only for its model entry and the URL it was given for."""
    return f"model:{model_id}:api_key:{url}"


def legacy_model_api_key_context(model_id: Any) -> str:
    """How keys were sealed before they were bound to their URL (re-sealed at start-up)."""
    return f"model:{model_id}:api_key"


def user_totp_context(user_id: Any) -> str:
    return f"user:{user_id}:totp"


SEALED_COLUMNS: tuple[SealedColumn, ...] = (
    SealedColumn(cast(Table, AuditRow.__table__), "seq", "details", audit_details_context),
    SealedColumn(
        cast(Table, ModelRow.__table__),
        "id",
        "api_key_sealed",
        model_api_key_context,
        bound_to=("url",),
    ),
    SealedColumn(
        cast(Table, UserRow.__table__),
        "id",
        "totp_secret_sealed",
        user_totp_context,
        seal_plaintext=False,
    ),
)


def _stale(column: SealedColumn, current_version: int) -> ColumnElement[bool]:
    """Values that the current data key did not seal."""
    sealed_by_other = and_(
        column.value.like(f"{FORMAT}:%"),
        not_(column.value.like(f"{version_prefix(current_version)}%")),
    )
    if not column.seal_plaintext:
        return sealed_by_other
    return or_(sealed_by_other, not_(column.value.like(f"{FORMAT}:%")))


def stale_records_exist(db: Database, keyring: Keyring) -> bool:
    """Whether any record is sealed by an older data key (or not at all): one row at most
    is read per column."""
    keyring.refresh()
    current = keyring.current.version
    with db.session() as session:
        for column in SEALED_COLUMNS:
            query = select(column.key).where(column.value.is_not(None), _stale(column, current))
            if session.execute(query.limit(1)).first() is not None:
                return True
    return False


@dataclass(slots=True)
class RewrapReport:
    rewrapped: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    """Rows changed by someone else between read and write; the next run takes them."""

    @property
    def total(self) -> int:
        return sum(self.rewrapped.values())


def rewrap(
    db: Database,
    keyring: Keyring,
    *,
    batch_size: int = 500,
    columns: tuple[SealedColumn, ...] | None = None,
    progress: Callable[[str, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RewrapReport:
    """Re-seal every stale value with the current data key; returns counts per column."""
    keyring.refresh()
    current = keyring.current.version
    report = RewrapReport()
    for column in columns or SEALED_COLUMNS:
        done = 0
        cursor: Any = None
        while should_stop is None or not should_stop():
            bound = [column.table.c[name] for name in column.bound_to]
            query = select(column.key, column.value, *bound).where(
                column.value.is_not(None), _stale(column, current)
            )
            if cursor is not None:
                query = query.where(column.key > cursor)
            with db.session() as session:
                rows = session.execute(query.order_by(column.key).limit(batch_size)).all()
                for key, value, *bound_values in rows:
                    context = column.context(key, *bound_values)
                    plaintext = keyring.decrypt(value, context) if is_sealed(value) else value
                    resealed = keyring.encrypt(plaintext, context)
                    result = session.execute(
                        update(column.table)
                        .where(column.key == key, column.value == value)
                        .values({column.value_name: resealed})
                    )
                    if result.rowcount == 1:  # type: ignore[attr-defined]
                        done += 1
                    else:
                        report.skipped += 1
            if not rows:
                break
            cursor = rows[-1][0]
            if progress is not None:
                progress(column.name, done)
        report.rewrapped[column.name] = done
    return report


def records_per_version(
    db: Database, versions: list[int], columns: tuple[SealedColumn, ...] | None = None
) -> dict[str, dict[str, int]]:
    """``{column: {"3": count, …, "unsealed": count}}``: what each data key still holds."""
    counts: dict[str, dict[str, int]] = {}
    for column in columns or SEALED_COLUMNS:
        labels = [str(version) for version in versions] + [UNSEALED]
        conditions = [column.value.like(f"{version_prefix(v)}%") for v in versions]
        conditions.append(not_(column.value.like(f"{FORMAT}:%")))
        query = select(*(func.count().filter(condition) for condition in conditions)).where(
            column.value.is_not(None)
        )
        with db.session() as session:
            row = session.execute(query).one()
        counts[column.name] = dict(zip(labels, (int(n) for n in row), strict=True))
    return counts
