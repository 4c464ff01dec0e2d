"""What every CLI command shares: settings, the control plane, one-line errors."""

from __future__ import annotations

import getpass
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from inhouse.config import Settings, load_settings
from inhouse.errors import InhouseError
from inhouse.gateway.control import Control, open_control
from inhouse.validation import first_problem

# Piped output is read by scripts: never wrap or fold it at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 1000)
error_console = Console(stderr=True, soft_wrap=True)


def fail(message: str) -> typer.Exit:
    error_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code=1)


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except InhouseError as exc:
        raise fail(exc.message) from None
    except ValidationError as exc:
        where, what = first_problem(exc)
        raise fail(f"invalid configuration {where}: {what}") from None


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)


@contextmanager
def control_plane(settings: Settings | None = None) -> Iterator[Control]:
    """Open the store for an admin command; user mistakes become one line and exit 1."""
    settings = settings or settings_or_exit()
    try:
        control = open_control(settings)
    except InhouseError as exc:
        raise fail(exc.message) from None
    announce_bootstrap(control)
    try:
        yield control
    except InhouseError as exc:
        raise fail(exc.message) from None
    finally:
        control.db.dispose()


def announce_bootstrap(control: Control) -> None:
    if control.admin_key_written is not None:
        error_console.print(
            "First start: created the platform tenant; its admin key is in "
            f"{control.admin_key_written.resolve()} (readable only by you).",
            highlight=False,
        )


JSON_OPTION = typer.Option(False, "--json", help="print JSON lines, for scripts")


def cli_actor() -> str:
    """Who an admin command acts as, in the audit log: the operating-system user."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid-{os.getuid()}"


def print_rows(columns: Sequence[str], rows: Sequence[Sequence[str]], *, as_json: bool) -> None:
    """A table for people, or one JSON object per line for scripts; never truncated."""
    if as_json:
        for row in rows:
            typer.echo(json.dumps(dict(zip(columns, row, strict=True))))
        return
    table = Table(*columns)
    for column in table.columns:
        column.overflow = "fold"
    for row in rows:
        table.add_row(*row)
    console.print(table)
