"""``inhouse flows apply|validate|test|list|show|rollback|schema``: a tenant's flows."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
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
    text = _read_spec(file)
    with control_plane() as control:
        spec = parse_spec_text(text, default_registry())
        applied = control.flows.apply(tenant, spec.model_dump(), actor=cli_actor())
    console.print(
        f"flow {applied.name} version {applied.version} published: model flow:{applied.name}",
        highlight=False,
    )


def _read_spec(file: Path) -> str:
    try:
        return file.read_text()
    except OSError as exc:
        raise fail(f"cannot read {file}: {exc.strerror}") from None


@app.command("validate")
def validate(file: Path = typer.Argument(..., help="the flow spec, YAML or JSON")) -> None:
    """Check a spec as apply would (steps, options, lexicon files), storing nothing."""
    with control_plane() as control:
        spec = control.flows.validate(
            parse_spec_text(_read_spec(file), default_registry()).model_dump()
        )
    variables = ", ".join(spec.model.variables) or "none"
    console.print(f"flow {spec.name} is valid; template variables: {variables}", highlight=False)


@app.command("test")
def test(
    file: Path = typer.Argument(..., help="the flow spec, YAML or JSON"),
    sample: list[str] = typer.Option(..., "--input", help="a sample input (repeatable)"),
    var: list[str] | None = typer.Option(None, "--var", help="a template variable NAME=VALUE"),
    url: str = typer.Option("http://127.0.0.1:8000", "--url", help="a running gateway"),
    key: str | None = typer.Option(
        None, "--key", help="an API key of the tenant to test in [default: INHOUSE_API_KEY]"
    ),
) -> None:
    """Run a spec that is not published on sample inputs, through a running gateway (the
    model calls are real); print each output and its steps' decisions."""
    api_key = key or os.environ.get("INHOUSE_API_KEY")
    if not api_key:
        raise fail("give --key or set INHOUSE_API_KEY: the flow runs as that key's tenant")
    spec = parse_spec_text(_read_spec(file), default_registry())
    variables = dict(_pair(item) for item in var or [])
    body = {
        "spec": spec.model_dump(mode="json"),
        "inputs": [{"input": text, "variables": variables} for text in sample],
    }
    try:
        response = httpx.post(
            f"{url.rstrip('/')}/admin/flows/test",
            json=body,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=600,
        )
    except httpx.HTTPError as exc:
        raise fail(f"cannot reach {url}: {exc}") from None
    if response.status_code != 200:
        raise fail(f"the gateway answered {response.status_code}: {response.text[:500]}")
    for text, result in zip(sample, response.json()["results"], strict=True):
        decisions = " ".join(f"{t['step']}={t['decision']}" for t in result["trace"] or [])
        blocked = result["blocked"]
        verdict = f"blocked by {blocked['step']} ({blocked['category']})" if blocked else "answered"
        typer.echo(f"> {text}\n  {verdict}; steps: {decisions}\n  {result['output']}")


def _pair(item: str) -> tuple[str, str]:
    name, equals, value = item.partition("=")
    if not equals or not name:
        raise fail(f"--var {item!r}: write NAME=VALUE")
    return name, value


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
