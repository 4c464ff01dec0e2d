from __future__ import annotations

import ssl
from pathlib import Path

import typer

from inhouse.cli.common import configure_logging, control_plane, fail, settings_or_exit
from inhouse.config import Precision
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

    # Imported here: torch and the server load only for the command that needs them.
    import uvicorn

    from inhouse.engine.local import LocalEngine
    from inhouse.node.app import create_node_app

    engine = LocalEngine(entry.name, weights, settings.engine, precision=dtype)
    app = create_node_app(settings, engine, settings.node_token.get_secret_value())
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
