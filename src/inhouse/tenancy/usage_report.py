"""Usage reports: requests and tokens per day, model, key or tenant, as rows or CSV."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.elements import ColumnElement

from inhouse.store.db import Database
from inhouse.store.tables import TenantRow, UsageRow


class Grouping(StrEnum):
    DAY = "day"
    MODEL = "model"
    KEY = "key"
    TENANT = "tenant"


@dataclass(frozen=True, slots=True)
class UsageLine:
    day: str | None
    tenant: str | None
    model: str | None
    key_id: str | None
    requests: int
    failed: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


@dataclass(frozen=True, slots=True)
class UsageQuery:
    tenant_id: str | None = None
    """None: every tenant (platform principals only)."""
    key_id: str | None = None
    group_by: tuple[Grouping, ...] = (Grouping.DAY,)
    since: date | None = None
    until: date | None = None
    """Inclusive."""


def _day(db: Database) -> ColumnElement[Any]:
    if db.engine.dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", UsageRow.created_at), "YYYY-MM-DD")
    return func.strftime("%Y-%m-%d", UsageRow.created_at)


def usage_report(db: Database, query: UsageQuery) -> list[UsageLine]:
    columns: dict[Grouping, ColumnElement[Any] | InstrumentedAttribute[str]] = {
        Grouping.DAY: _day(db),
        Grouping.MODEL: UsageRow.model,
        Grouping.KEY: UsageRow.key_id,
        Grouping.TENANT: TenantRow.name,
    }
    groups = [columns[g].label(g.value) for g in query.group_by]
    statement = (
        select(
            *groups,
            func.count(UsageRow.id).label("requests"),
            func.sum(case((UsageRow.status_code == 200, 0), else_=1)).label("failed"),
            func.coalesce(func.sum(UsageRow.prompt_tokens), 0).label("prompt_tokens"),
            func.coalesce(func.sum(UsageRow.completion_tokens), 0).label("completion_tokens"),
        )
        .select_from(UsageRow)
        .join(TenantRow, TenantRow.id == UsageRow.tenant_id, isouter=True)
    )
    if query.tenant_id is not None:
        statement = statement.where(UsageRow.tenant_id == query.tenant_id)
    if query.key_id is not None:
        statement = statement.where(UsageRow.key_id == query.key_id)
    if query.since is not None:
        statement = statement.where(UsageRow.created_at >= _midnight(query.since))
    if query.until is not None and query.until < date.max:  # date.max: no end
        statement = statement.where(
            UsageRow.created_at < _midnight(query.until + timedelta(days=1))
        )
    if groups:
        statement = statement.group_by(*groups).order_by(*groups)
    with db.session() as session:
        rows = session.execute(statement).mappings().all()
    return [
        UsageLine(
            day=row.get("day"),
            tenant=row.get("tenant"),
            model=row.get("model"),
            key_id=row.get("key"),
            requests=int(row["requests"]),
            failed=int(row["failed"] or 0),
            prompt_tokens=int(row["prompt_tokens"]),
            completion_tokens=int(row["completion_tokens"]),
            total_tokens=int(row["prompt_tokens"]) + int(row["completion_tokens"]),
        )
        for row in rows
    ]


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def report_columns(group_by: tuple[Grouping, ...]) -> list[str]:
    names = {Grouping.DAY: "day", Grouping.TENANT: "tenant", Grouping.MODEL: "model"}
    grouped = [names.get(g, "key_id") for g in group_by]
    return [*grouped, "requests", "failed", "prompt_tokens", "completion_tokens", "total_tokens"]


def as_rows(lines: list[UsageLine], group_by: tuple[Grouping, ...]) -> list[dict[str, Any]]:
    columns = report_columns(group_by)
    return [{name: asdict(line)[name] for name in columns} for line in lines]


def to_csv(lines: list[UsageLine], group_by: tuple[Grouping, ...]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=report_columns(group_by), lineterminator="\n")
    writer.writeheader()
    writer.writerows(as_rows(lines, group_by))
    return buffer.getvalue()
