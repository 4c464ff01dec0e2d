from __future__ import annotations

import typer
from rich.table import Table

from inhouse.cli.common import console, control_plane

app = typer.Typer(help="Tenants: departments or subsidiaries that share the platform.")


@app.command("create")
def create(name: str = typer.Argument(..., help="lowercase letters, digits, '-', '_'")) -> None:
    """Create a tenant."""
    with control_plane() as control:
        tenant = control.tenants.create_tenant(name)
    console.print(f"created tenant {tenant.name} ({tenant.id})", highlight=False)


@app.command("list")
def list_tenants() -> None:
    """List tenants."""
    with control_plane() as control:
        tenants = control.tenants.list_tenants()
    table = Table("name", "id", "platform", "created")
    for tenant in tenants:
        table.add_row(
            tenant.name,
            tenant.id,
            "yes" if tenant.is_platform else "",
            f"{tenant.created_at:%Y-%m-%d %H:%M}",
        )
    console.print(table)
