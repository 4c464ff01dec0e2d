"""``inhouse crypto rotate|rewrap|status|new-master-key``: encryption at rest."""

from __future__ import annotations

import os
import time

import typer

from inhouse.cli.common import (
    JSON_OPTION,
    cli_actor,
    console,
    control_plane,
    error_console,
    fail,
    print_rows,
    settings_or_exit,
)
from inhouse.security.key_provider import new_master_key_text, write_next_master_key

app = typer.Typer(help="Encryption at rest: data keys (SM4-GCM) wrapped by a master key; rotation.")


@app.command("status")
def status(as_json: bool = JSON_OPTION) -> None:
    """Data key versions, their ages and records, and when rotation is due."""
    with control_plane() as control:
        report = control.key_rotation.status()
    rows = [
        [
            str(v.version) + (" (current)" if v.current and not as_json else ""),
            v.algorithm,
            v.created_at.isoformat(timespec="seconds"),
            f"{v.age.total_seconds() / 86400:.1f}",
            str(v.records),
        ]
        for v in report.versions
    ]
    print_rows(["version", "algorithm", "created", "age_days", "records"], rows, as_json=as_json)
    if as_json:
        return
    console.print(
        f"rotation due: {report.rotation_due_at.isoformat(timespec='seconds')}; "
        f"records not yet encrypted: {report.unsealed_records}",
        highlight=False,
    )
    for warning in report.warnings:
        error_console.print(f"[bold yellow]warning:[/] {warning}", highlight=False)


@app.command("rotate")
def rotate() -> None:
    """Make a new data key; new records are sealed with it, older ones keep opening."""
    with control_plane() as control:
        version = control.key_rotation.rotate(cli_actor())
    console.print(
        f"data key version {version} is now current; run 'inhouse crypto rewrap' to "
        "re-encrypt older records",
        highlight=False,
    )


@app.command("rewrap")
def rewrap(
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=1, max=100_000, help="records per transaction"
    ),
) -> None:
    """Re-encrypt records sealed with older keys under the current one, in batches.

    Safe beside a running gateway and resumable: stop it at any time, and the next run
    takes exactly the records still to do.
    """
    started = time.monotonic()

    def progress(column: str, done: int) -> None:
        error_console.print(f"{column}: {done} re-encrypted", highlight=False)

    with control_plane() as control:
        report = control.key_rotation.rewrap(cli_actor(), batch_size=batch_size, progress=progress)
        current = control.keyring.current.version
    console.print(
        f"{report.total} records re-encrypted under data key version {current} in "
        f"{time.monotonic() - started:.1f} s"
        + (f"; {report.skipped} changed meanwhile, run again" if report.skipped else ""),
        highlight=False,
    )


@app.command("new-master-key")
def new_master_key(
    print_only: bool = typer.Option(
        False, "--print", help="only print a new random key (base64); change nothing"
    ),
) -> None:
    """Change the master key: every data key is re-wrapped under a new one.

    The new key is written first (next to the current one, 0600); each data key is then
    re-wrapped in its own transaction, and while this runs a data key opens with either
    key. Stopped midway (a crash, Ctrl-C), nothing is lost: run it again to finish. With
    the file provider the new key then replaces the old one; with another provider, put
    the new key where the provider reads it. Restart every gateway afterwards.
    """
    if print_only:
        typer.echo(new_master_key_text())
        return
    settings = settings_or_exit()
    to = write_next_master_key(settings)
    with control_plane(settings) as control:
        left = control.key_rotation.change_master_key(to, cli_actor())
    if left:
        raise fail(f"{left} data keys are still under the old master key: run it again")
    next_file = settings.next_master_key_file
    if settings.crypto.key_provider == "file":
        os.replace(next_file, settings.master_key_file)
        console.print(
            f"every data key is wrapped under the new master key, now in "
            f"{settings.master_key_file}; restart every gateway",
            highlight=False,
        )
        return
    console.print(
        f"every data key is wrapped under the new master key in {next_file}: put it where "
        f"the {settings.crypto.key_provider!r} provider reads it, restart every gateway, "
        "then delete the file",
        highlight=False,
    )
