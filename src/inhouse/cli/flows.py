"""``inhouse flows apply|list|show|rollback|schema``: a tenant's published flows."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from inhouse.cli.common import JSON_OPTION, cli_actor, console, control_plane, fail, print_rows
from inhouse.flows.catalogue import default_registry
from inhouse.flows.spec import flow_json_schema, parse_spec_text

app = typer.Typer(help="Flows: pre-processing → model → post-processing, as flow:NAME.")

TENANT = typer.Option(..., "--tenant", help="the tenant the flow belongs to")


@app.command("apply")
def apply(
    file: Path = typer.Argument(..., help="the flow spec, YAML or JSON"), tenant: str = TENANT
) -> None:
    """Validate the spec, store it as the flow's next version and publish it."""
    try:
        text = file.read_text()
    except OSError as exc:
        raise fail(f"cannot read {file}: {exc.strerror}") from None
    with control_plane() as control:
        spec = parse_spec_text(text, default_registry())
        applied = control.flows.apply(tenant, spec.model_dump(), actor=cli_actor())
    console.print(
        f"flow {applied.name} version {applied.version} published: model flow:{applied.name}",
        highlight=False,
    )


@app.command("list")
def list_flows(
    tenant: str | None = typer.Option(None, "--tenant", help="one tenant's flows"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Flows with their published and latest versions."""
    with control_plane() as control:
        flows = control.flows.list(tenant)
        names = {t.id: t.name for t in control.tenants.list_tenants()}
    rows = [
        [f.name, names.get(f.tenant_id, f.tenant_id), str(f.published), str(f.latest),
         f.updated_at.isoformat(timespec="seconds")]
        for f in flows
    ]  # fmt: skip
    print_rows(["name", "tenant", "published", "latest", "updated"], rows, as_json=as_json)


@app.command("show")
def show(
    name: str,
    tenant: str = TENANT,
    version: int | None = typer.Option(None, "--version", min=1, help="default: published"),
) -> None:
    """Print a version's spec as JSON."""
    with control_plane() as control:
        found = control.flows.show(tenant, name, version)
    document = {"version": found.version, "published": found.published, **found.spec.model_dump()}
    typer.echo(json.dumps(document, ensure_ascii=False, indent=2))


@app.command("rollback")
def rollback(
    name: str,
    tenant: str = TENANT,
    to: int | None = typer.Option(None, "--to", min=1, help="default: the previous version"),
) -> None:
    """Publish an earlier version (or any version, with --to)."""
    with control_plane() as control:
        published = control.flows.rollback(tenant, name, to=to, actor=cli_actor())
    console.print(f"flow {name} now answers with version {published.version}", highlight=False)


@app.command("schema")
def schema() -> None:
    """Print the JSON schema of flow specs (every step type and its options)."""
    typer.echo(json.dumps(flow_json_schema(default_registry()), ensure_ascii=False, indent=2))
