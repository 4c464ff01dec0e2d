from __future__ import annotations

import typer

from inhouse.cli.common import JSON_OPTION, cli_actor, console, control_plane, print_rows

app = typer.Typer(help="Tenants: departments or subsidiaries that share the platform.")


@app.command("create")
def create(name: str = typer.Argument(..., help="lowercase letters, digits, '-', '_'")) -> None:
    """Create a tenant."""
    with control_plane() as control:
        tenant = control.tenants.create_tenant(name, actor=cli_actor())
    console.print(f"created tenant {tenant.name} ({tenant.id})", highlight=False)


@app.command("list")
def list_tenants(as_json: bool = JSON_OPTION) -> None:
    """List tenants."""
    with control_plane() as control:
        tenants = control.tenants.list_tenants()
    rows = [
        (t.name, t.id, "yes" if t.is_platform else "", f"{t.created_at:%Y-%m-%d %H:%M}")
        for t in tenants
    ]
    print_rows(("name", "id", "platform", "created"), rows, as_json=as_json)
