"""The ``inhouse`` command. Admin commands work on the data directory (or
``INHOUSE_DATABASE_URL``) directly, whether or not a server is running."""

from __future__ import annotations

import os
import sys

# Models and tokenizers come from local disk only; never ask a hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import typer

from inhouse import __version__
from inhouse.cli import (
    audit,
    compliance,
    crypto,
    flows,
    keys,
    models,
    node,
    nodes,
    quotas,
    serve,
    tenants,
    usage,
    users,
)
from inhouse.cli.common import console

app = typer.Typer(
    name="inhouse",
    help="inhouse: a self-hosted generative-AI platform.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("serve")(serve.serve)
app.command("node")(node.node)
app.add_typer(tenants.app, name="tenants")
app.add_typer(keys.app, name="keys")
app.add_typer(models.app, name="models")
app.add_typer(nodes.app, name="nodes")
app.add_typer(quotas.app, name="quotas")
app.command("usage")(usage.usage)
app.add_typer(audit.app, name="audit")
app.add_typer(crypto.app, name="crypto")
app.add_typer(users.app, name="users")
app.add_typer(flows.app, name="flows")
app.add_typer(compliance.app, name="compliance")


@app.command("version")
def version() -> None:
    """Print the version."""
    console.print(f"inhouse {__version__}")


def run() -> None:
    sys.exit(app())
