"""``inhouse usage``: requests and tokens per day, model, key or tenant; CSV for export."""

from __future__ import annotations

import json
from datetime import date, datetime

import typer

from inhouse.cli.common import JSON_OPTION, control_plane, fail, print_rows
from inhouse.tenancy.usage_report import (
    Grouping,
    UsageQuery,
    as_rows,
    report_columns,
    to_csv,
    usage_report,
)


def _day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise fail(f"{option}: expected a date as YYYY-MM-DD, not {value!r}") from None


def usage(
    tenant: str | None = typer.Option(None, "--tenant", help="one tenant; default: all"),
    key: str | None = typer.Option(None, "--key", help="one key id"),
    by: list[Grouping] = typer.Option(
        [Grouping.DAY], "--by", help="group by day, model, key or tenant (repeatable)"
    ),
    since: str | None = typer.Option(None, "--since", help="first day (UTC), YYYY-MM-DD"),
    until: str | None = typer.Option(None, "--until", help="last day (UTC), YYYY-MM-DD"),
    csv: bool = typer.Option(False, "--csv", help="print CSV, for spreadsheets and billing"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Usage: requests, failures and tokens, grouped."""
    group_by = tuple(dict.fromkeys(by))
    query_since, query_until = _day(since, "--since"), _day(until, "--until")
    with control_plane() as control:
        tenant_id = control.tenants.get_tenant(tenant).id if tenant else None
        lines = usage_report(
            control.db,
            UsageQuery(
                tenant_id=tenant_id,
                key_id=key,
                group_by=group_by,
                since=query_since,
                until=query_until,
            ),
        )
    if csv:
        typer.echo(to_csv(lines, group_by), nl=False)
        return
    if as_json:
        for row in as_rows(lines, group_by):
            typer.echo(json.dumps(row))
        return
    columns = report_columns(group_by)
    rows = [
        [str(row[c] if row[c] is not None else "") for c in columns]
        for row in as_rows(lines, group_by)
    ]
    print_rows(columns, rows, as_json=False)
