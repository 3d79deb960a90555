"""``wangge serve``: the HTTP API under uvicorn."""

from __future__ import annotations

import typer
import uvicorn

from geo.settings import ApiSettings


def serve(
    host: str = typer.Option(None, help="Bind address (default WANGGE_HOST)."),
    port: int = typer.Option(None, help="Port (default WANGGE_PORT)."),
    workers: int = typer.Option(1, help="uvicorn worker processes."),
) -> None:
    """Serve the API, with OpenAPI docs at /docs."""
    settings = ApiSettings()
    uvicorn.run(
        "api.main:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_level=settings.log_level,
    )




def demo(
    port: int = typer.Option(None, help="Port (default WANGGE_PORT)."),
) -> None:
    """Start the embedded database, migrate, load the demo district, and serve the API."""
    from cli.common import engine
    from geo.demo import ensure_demo_loaded

    eng = engine()
    with eng.begin() as conn:
        ensure_demo_loaded(conn)
    eng.dispose()
    serve(host=None, port=port, workers=1)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("demo")(demo)
