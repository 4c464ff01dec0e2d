from __future__ import annotations

import socket
import ssl
from pathlib import Path

import typer

from inhouse.cli.common import configure_logging, control_plane, fail, settings_or_exit
from inhouse.config import Precision
from inhouse.errors import InhouseError
from inhouse.fleet.registry import NODE_NAME, normalise_url
from inhouse.node.registration import Registration
from inhouse.protocol.types import Tier
from inhouse.registry.builtin import ensure_builtin_model
from inhouse.registry.models import ModelKind


def node(
    model: str = typer.Option(..., "--model", help="a local model of the registry, by name"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on"),
    port: int = typer.Option(..., "--port", help="port to listen on"),
    dtype: Precision | None = typer.Option(
        None, "--dtype", help="float32, bfloat16 or int8 [default: INHOUSE_ENGINE__DTYPE]"
    ),
    tls_cert: Path | None = typer.Option(
        None, "--tls-cert", help="serve HTTPS with this certificate (PEM, chain first)"
    ),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="the certificate's private key"),
    tls_client_ca: Path | None = typer.Option(
        None,
        "--tls-client-ca",
        help="require callers to present a certificate signed by this CA (mutual TLS)",
    ),
    register: str | None = typer.Option(
        None,
        "--register",
        help="register with this gateway (e.g. http://gateway:8000) once the model is "
        "loaded, and every 30 s, with the node token",
    ),
    tier: Tier | None = typer.Option(
        None, "--tier", help="with --register: edge (small, close) or center (large)"
    ),
    advertise_url: str | None = typer.Option(
        None,
        "--advertise-url",
        help="with --register: where the gateway reaches this node (default: this host and --port)",
    ),
    node_name: str | None = typer.Option(
        None, "--node-name", help="with --register: the node's name (default: host-port)"
    ),
) -> None:
    """Serve one local model with the batching engine (for a gateway's fleet)."""
    if (tls_cert is None) != (tls_key is None):
        raise fail("give --tls-cert and --tls-key together")
    if tls_client_ca is not None and tls_cert is None:
        raise fail("--tls-client-ca needs --tls-cert and --tls-key: mutual TLS is over HTTPS")
    for option, file in (
        ("--tls-cert", tls_cert),
        ("--tls-key", tls_key),
        ("--tls-client-ca", tls_client_ca),
    ):
        if file is not None and not file.is_file():
            raise fail(f"{option} {file} is not a file")
    if register is None and (tier or advertise_url or node_name):
        raise fail("--tier, --advertise-url and --node-name go with --register GATEWAY_URL")
    if register is not None and tier is None:
        raise fail("--register needs --tier edge or --tier center")
    if node_name is not None and not NODE_NAME.match(node_name):
        raise fail(f"--node-name {node_name!r}: 1-128 letters, digits or . _ : -")
    gateway = advertised = None
    if register is not None:
        scheme = "https" if tls_cert is not None else "http"
        try:
            gateway = normalise_url(register)  # an http(s) URL with a host
            advertised = normalise_url(advertise_url or f"{scheme}://{_reachable(host)}:{port}")
        except InhouseError as exc:
            raise fail(f"--register/--advertise-url: {exc.message}") from None
    settings = settings_or_exit()
    configure_logging(settings)
    if settings.node_token is None or len(settings.node_token.get_secret_value()) < 16:
        raise fail("set INHOUSE_NODE_TOKEN (16 characters or more): callers must present it")
    with control_plane(settings) as control:
        entry = control.registry.get(model)
    if entry.kind is ModelKind.REMOTE:
        raise fail(f"model {model!r} is remote; a node serves local weights")
    models_dir = settings.resolved_models_dir
    path = Path(entry.path) if entry.path else None

    def weights() -> Path:
        return path if path is not None else ensure_builtin_model(models_dir)

    registration = None
    if gateway is not None and advertised is not None and tier is not None:
        registration = Registration(
            gateway_url=gateway,
            advertise_url=advertised,
            tier=tier,
            model=entry.name,
            token=settings.node_token.get_secret_value(),
            name=node_name,
            heartbeat_seconds=settings.fleet.heartbeat_seconds,
        )

    # Imported here: torch and the server load only for the command that needs them.
    import uvicorn

    from inhouse.engine.local import LocalEngine
    from inhouse.node.app import create_node_app

    engine = LocalEngine(entry.name, weights, settings.engine, precision=dtype)
    app = create_node_app(
        settings, engine, settings.node_token.get_secret_value(), registration=registration
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=30,
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
        ssl_ca_certs=str(tls_client_ca) if tls_client_ca else None,
        ssl_cert_reqs=ssl.CERT_REQUIRED if tls_client_ca else ssl.CERT_NONE,
    )


def _reachable(host: str) -> str:
    """The host part of the default advertised URL: a wildcard address is not one."""
    if host in ("0.0.0.0", "::", ""):
        return socket.gethostname()
    return f"[{host}]" if ":" in host else host
