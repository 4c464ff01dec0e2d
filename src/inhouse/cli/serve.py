from __future__ import annotations

import typer

from inhouse.cli.common import configure_logging, control_plane, settings_or_exit


def serve(
    host: str | None = typer.Option(
        None, "--host", help="address to listen on [default: 127.0.0.1]"
    ),
    port: int | None = typer.Option(None, "--port", help="port to listen on [default: 8000]"),
) -> None:
    """Run the gateway (API, control plane and, by default, the built-in model)."""
    settings = settings_or_exit()
    configure_logging(settings)
    with control_plane(settings):
        pass  # migrate and bootstrap before the server starts, and say so
    # Imported here: torch and the server load only for the command that needs them.
    import uvicorn

    from inhouse.api.app import create_app

    uvicorn.run(
        create_app(settings),
        host=host or settings.server.host,
        port=port or settings.server.port,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=30,
    )
