"""``inhouse quotas set|show``: a tenant's (or one key's) limits."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

import typer

from inhouse.cli.common import JSON_OPTION, cli_actor, control_plane, fail, print_rows
from inhouse.errors import InvalidRequestError
from inhouse.tenancy.quotas import Quota, parse_changes

app = typer.Typer(
    help="Quotas: tokens, rates, concurrency, priority, cpu, memory, models, storage."
)

UNLIMITED = ("none", "unlimited")
_LIMIT_HELP = "a number, or 'none' to remove the limit"


def _count(value: str, option: str) -> int | None:
    if value.strip().lower() in UNLIMITED:
        return None
    try:
        number = int(value.replace("_", "").replace(",", ""))
    except ValueError:
        raise InvalidRequestError(
            f"{option}: expected a whole number or 'none', not {value!r}"
        ) from None
    if number < 0:
        raise InvalidRequestError(f"{option}: must be 0 or more")
    return number


def _quantity(value: str) -> str | None:
    return None if value.strip().lower() in UNLIMITED else value


@app.command("set")
def set_quotas(
    tenant: str = typer.Argument(..., help="tenant name"),
    key: str | None = typer.Option(None, "--key", help="set this key's own quota (key id)"),
    tokens_per_day: str | None = typer.Option(None, "--tokens-per-day", help=_LIMIT_HELP),
    tokens_per_month: str | None = typer.Option(None, "--tokens-per-month", help=_LIMIT_HELP),
    rpm: str | None = typer.Option(None, "--rpm", help="requests per minute; " + _LIMIT_HELP),
    tpm: str | None = typer.Option(None, "--tpm", help="tokens per minute; " + _LIMIT_HELP),
    concurrency: str | None = typer.Option(None, "--concurrency", help=_LIMIT_HELP),
    priority: str | None = typer.Option(None, "--priority", help="high, normal or low"),
    cpu: str | None = typer.Option(None, "--cpu", help="cores: 8, 0.5 or 500m; or 'none'"),
    memory: str | None = typer.Option(None, "--memory", help="bytes or 32Gi, 512Mi; or 'none'"),
    models: str | None = typer.Option(None, "--models", help="model count; " + _LIMIT_HELP),
    storage: str | None = typer.Option(None, "--storage", help="bytes or 100Gi, 1Ti; or 'none'"),
) -> None:
    """Change the limits given; the others stay as they are."""
    counts = {
        "tokens_per_day": (tokens_per_day, "--tokens-per-day"),
        "tokens_per_month": (tokens_per_month, "--tokens-per-month"),
        "requests_per_minute": (rpm, "--rpm"),
        "tokens_per_minute": (tpm, "--tpm"),
        "concurrency": (concurrency, "--concurrency"),
        "model_count": (models, "--models"),
    }
    quantities = {"cpu_limit": cpu, "memory_limit": memory, "storage_limit": storage}
    with control_plane() as control:
        raw: dict[str, Any] = {
            name: _count(value, option)
            for name, (value, option) in counts.items()
            if value is not None
        }
        raw |= {name: _quantity(value) for name, value in quantities.items() if value is not None}
        if priority is not None:
            raw["priority"] = _quantity(priority)
        if not raw:
            raise fail("nothing to set: give at least one limit (see --help)")
        changes = parse_changes(raw)
        quota = control.quotas.update(tenant, changes, key, actor=cli_actor())
    _print(quota, as_json=False)


@app.command("show")
def show(
    tenant: str = typer.Argument(..., help="tenant name"),
    key: str | None = typer.Option(None, "--key", help="show this key's own quota (key id)"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show a tenant's limits (empty: no limit)."""
    with control_plane() as control:
        quota = control.quotas.get(tenant, key)
    _print(quota, as_json=as_json)


def _print(quota: Quota, *, as_json: bool) -> None:
    values = {k: v.value if isinstance(v, StrEnum) else v for k, v in quota.as_dict().items()}
    if as_json:
        typer.echo(json.dumps(values))
        return
    rows = [(name, "" if value is None else str(value)) for name, value in values.items()]
    print_rows(("limit", "value"), rows, as_json=False)
