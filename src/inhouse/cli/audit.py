"""``inhouse audit verify|export``: the tamper-evident log of admin actions."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import typer

from inhouse.cli.common import console, control_plane, fail

app = typer.Typer(help="The audit log: a hash chain (HMAC-SM3) of admin actions and key events.")


def _moment(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise fail(
            f"{option}: expected a date or time such as 2026-11-01 or 2026-11-01T08:00"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@app.command("verify")
def verify() -> None:
    """Check the whole chain and that it still reaches its latest checkpoint; exit 1 naming
    the first edited, deleted or moved entry, or the newest entries deleted."""
    with control_plane() as control:
        result = control.audit.verify()
        anchored = control.audit_anchor.check()
        head = control.audit.head()
    if not result.ok:
        raise fail(f"the audit chain is broken at entry {result.first_bad_seq}: {result.problem}")
    if not anchored.ok:
        raise fail(f"the audit chain lost its newest entries: {anchored.problem}")
    where = f"; head: entry {head.seq}, {head.hash}" if head is not None else ""
    checkpoint = anchored.checkpoint
    if checkpoint is not None:
        where += f"; checkpoint: entry {checkpoint.seq} at {checkpoint.at}"
    console.print(f"audit chain intact: {result.checked} entries{where}", highlight=False)


@app.command("checkpoint")
def checkpoint() -> None:
    """Anchor the chain's head outside the database now (the gateway does it every minute)."""
    with control_plane() as control:
        taken = control.audit_anchor.checkpoint()
        latest = control.audit_anchor.latest()
    if latest is None:
        console.print("the audit chain is empty: nothing to anchor", highlight=False)
        return
    said = "checkpoint written" if taken is not None else "already anchored"
    console.print(f"{said}: entry {latest.seq} at {latest.at}", highlight=False)


@app.command("export")
def export(
    since: str | None = typer.Option(None, "--since", help="from (UTC), inclusive: 2026-11-01"),
    until: str | None = typer.Option(None, "--until", help="to (UTC), exclusive: 2026-12-01"),
    tenant: str | None = typer.Option(None, "--tenant", help="one tenant's entries"),
) -> None:
    """Print entries as JSON lines, with their hashes, for archiving or a SIEM."""
    start, end = _moment(since, "--since"), _moment(until, "--until")
    with control_plane() as control:
        tenant_id = control.tenants.get_tenant(tenant).id if tenant else None
        entries = control.audit.entries(tenant_id=tenant_id, since=start, until=end)
    for entry in entries:
        typer.echo(json.dumps(entry.as_dict(), ensure_ascii=False))


@app.command("prune")
def prune() -> None:
    """Delete entries older than audit.retention_days now (the gateway does it hourly)."""
    with control_plane() as control:
        removed = control.prune_audit()
        days = control.settings.audit.retention_days
    console.print(f"{removed} entries older than {days} days removed", highlight=False)
