"""``inhouse users``: people who log in with a password and a one-time code (TOTP)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from inhouse.cli.common import JSON_OPTION, cli_actor, console, control_plane, fail, print_rows
from inhouse.store.tables import utcnow
from inhouse.tenancy.service import parse_role
from inhouse.tenancy.users import Enrolment

app = typer.Typer(help="People who log in (console, admin API): password + one-time code.")

PASSWORD_FILE = typer.Option(
    None, "--password-file", help="file holding the password ('-': standard input)"
)


def _password(path: Path | None) -> str:
    if path is None:
        if not sys.stdin.isatty():
            raise fail("no terminal to ask for the password: use --password-file")
        value: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        return value
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
    except OSError as exc:
        raise fail(f"cannot read --password-file {path}: {exc.strerror}") from None
    return text.rstrip("\r\n")


def _show_enrolment(enrolment: Enrolment, as_json: bool) -> None:
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "id": enrolment.user.id,
                    "username": enrolment.user.username,
                    "totp_secret": enrolment.totp_secret,
                    "totp_uri": enrolment.totp_uri,
                }
            )
        )
        return
    console.print(
        f"Add this to {enrolment.user.username}'s authenticator app (shown once):\n"
        f"  secret: {enrolment.totp_secret}\n  {enrolment.totp_uri}",
        highlight=False,
    )


@app.command("add")
def add(
    username: str = typer.Argument(..., help="login name"),
    tenant: str = typer.Option(..., "--tenant", help="the tenant the person belongs to"),
    role: str = typer.Option("developer", "--role", help="platform-admin, tenant-admin, ..."),
    password_file: Path | None = PASSWORD_FILE,
    as_json: bool = JSON_OPTION,
) -> None:
    """Add a person; prints the TOTP secret for their authenticator app, once."""
    password = _password(password_file)
    with control_plane() as control:
        enrolment = control.users.create_user(
            tenant, username, parse_role(role), password, actor=cli_actor()
        )
    _show_enrolment(enrolment, as_json)


@app.command("list")
def list_users(
    tenant: str | None = typer.Option(None, "--tenant", help="one tenant's users"),
    as_json: bool = JSON_OPTION,
) -> None:
    """List people, their roles and whether they are locked or disabled."""
    with control_plane() as control:
        found = control.users.list_users(tenant)
    now = utcnow()
    rows = [
        [
            u.username,
            u.tenant_name,
            u.role.value,
            "disabled" if u.disabled else ("locked" if u.locked(now) else "active"),
            u.id,
        ]
        for u in found
    ]
    print_rows(["username", "tenant", "role", "state", "id"], rows, as_json=as_json)


KEEP_KEYS = typer.Option(
    False, "--keep-keys", help="keep the API keys the person made (they are revoked otherwise)"
)


@app.command("reset-mfa")
def reset_mfa(username: str, keep_keys: bool = KEEP_KEYS, as_json: bool = JSON_OPTION) -> None:
    """New TOTP secret (a lost phone); ends the person's sessions and revokes the keys
    they made, unless --keep-keys."""
    with control_plane() as control:
        enrolment = control.users.reset_mfa(username, actor=cli_actor(), keep_keys=keep_keys)
    _show_enrolment(enrolment, as_json)


@app.command("passwd")
def passwd(
    username: str, password_file: Path | None = PASSWORD_FILE, keep_keys: bool = KEEP_KEYS
) -> None:
    """Set a new password; ends the person's sessions and revokes the keys they made,
    unless --keep-keys."""
    password = _password(password_file)
    with control_plane() as control:
        control.users.set_password(username, password, actor=cli_actor(), keep_keys=keep_keys)
    console.print(f"password of {username} changed", highlight=False)


@app.command("unlock")
def unlock(username: str) -> None:
    """Lift a lock left by failed logins."""
    with control_plane() as control:
        control.users.unlock(username, actor=cli_actor())
    console.print(f"{username} unlocked", highlight=False)


@app.command("disable")
def disable(username: str) -> None:
    """Stop a person logging in, and end their sessions."""
    with control_plane() as control:
        control.users.disable(username, actor=cli_actor())
    console.print(f"{username} disabled", highlight=False)


@app.command("revoke-sessions")
def revoke_sessions(username: str) -> None:
    """End every session of a person now (within the auth cache's seconds)."""
    with control_plane() as control:
        count = control.users.revoke_sessions(username, actor=cli_actor())
    console.print(f"{count} sessions of {username} revoked", highlight=False)
