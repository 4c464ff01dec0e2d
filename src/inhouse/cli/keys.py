from __future__ import annotations

import typer

from inhouse.cli.common import (
    JSON_OPTION,
    cli_actor,
    console,
    control_plane,
    error_console,
    print_rows,
)
from inhouse.tenancy.models import Role
from inhouse.tenancy.service import parse_role

app = typer.Typer(help="API keys: shown once at creation, stored as a hash.")


@app.command("create")
def create(
    tenant: str = typer.Option(..., "--tenant", help="the tenant the key belongs to"),
    role: str = typer.Option(
        Role.DEVELOPER.value, "--role", help="developer, tenant-admin, auditor or platform-admin"
    ),
    name: str = typer.Option("", "--name", help="a label for the key"),
    flows_only: bool = typer.Option(
        False, "--flows-only", help="the key may call flows (flow:NAME) only, never a model"
    ),
) -> None:
    """Create a key and print it; it is not shown again."""
    with control_plane() as control:
        info, plaintext = control.tenants.create_key(
            tenant, parse_role(role), name, actor=cli_actor(), flows_only=flows_only
        )
    typer.echo(plaintext)
    error_console.print(
        f"[dim]key {info.id} for tenant {info.tenant_name}, role {info.role.value}; "
        "store it now, it is not shown again[/]",
        highlight=False,
    )


@app.command("list")
def list_keys(
    tenant: str | None = typer.Option(None, "--tenant"), as_json: bool = JSON_OPTION
) -> None:
    """List keys (never their secrets)."""
    with control_plane() as control:
        keys = control.tenants.list_keys(tenant)
    rows = [
        (
            k.id,
            k.prefix,
            k.tenant_name,
            k.role.value,
            k.name,
            f"{k.created_at:%Y-%m-%d %H:%M}",
            "active" if k.active else "revoked",
            "yes" if k.flows_only else "",
        )
        for k in keys
    ]
    columns = ("id", "prefix", "tenant", "role", "name", "created", "status", "flows_only")
    print_rows(columns, rows, as_json=as_json)


@app.command("revoke")
def revoke(key: str = typer.Argument(..., help="key id (key_…) or its shown prefix")) -> None:
    """Revoke a key; running servers refuse it within seconds."""
    with control_plane() as control:
        info = control.tenants.revoke_key(key, actor=cli_actor())
    console.print(f"revoked key {info.id} of tenant {info.tenant_name}", highlight=False)
