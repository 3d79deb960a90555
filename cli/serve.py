"""``wangge serve``: the HTTP API under uvicorn."""

from __future__ import annotations

import os

import typer
import uvicorn

from geo.core.settings import ApiSettings


def serve(
    host: str = typer.Option(None, help="Bind address (default WANGGE_HOST)."),
    port: int = typer.Option(None, help="Port (default WANGGE_PORT)."),
    workers: int = typer.Option(1, help="uvicorn worker processes."),
) -> None:
    """Serve the API, with OpenAPI docs at /docs."""
    from cli.common import engine, prepare_incident_months

    os.environ.setdefault("WANGGE_LOOKUP_LISTEN", "true")  # each worker LISTENs for changes
    settings = ApiSettings()
    eng = engine(create=True)  # start and migrate the database once, before the workers
    try:
        prepare_incident_months(eng)  # months ahead made here, not by each worker
    finally:
        eng.dispose()
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
    password: str = typer.Option(None, envvar="WANGGE_DEMO_PASSWORD",
                                 help="Password of the demo-admin account (default: a new "
                                 "random one, printed)."),
) -> None:
    """Start the embedded database, migrate, load the demo district, and serve the API.

    Prints the ``demo-admin`` credentials: sign in at /docs (Authorize) to try every route.
    """
    from cli.common import engine
    from geo.samples.demo import (
        DEMO_ADMIN,
        ensure_demo_loaded,
        reset_demo_admin,
        reset_demo_people,
    )

    eng = engine(create=True)
    with eng.begin() as conn:
        ensure_demo_loaded(conn)
        secret = reset_demo_admin(conn, password)
        people = reset_demo_people(conn, secret)
    eng.dispose()
    settings = ApiSettings()
    url = f"http://{settings.host}:{port or settings.port}"
    typer.echo(f"\nwangge demo: {url}/docs  (Authorize as {DEMO_ADMIN} / {secret})\n"
               f"  token:  curl -s -d username={DEMO_ADMIN} -d password='{secret}' "
               f"{url}/v1/auth/token\n")
    typer.echo(console_paths(url, people, secret))
    serve(host=None, port=port, workers=1)


def console_paths(url: str, people: dict[str, str], password: str) -> str:
    """The console's address and, per demo role, the path that signs that person in."""
    from api.routers.console import HOME
    from web.messages import ROLES

    lines = [f"console: {url}/console  (password of every demo account: {password})"]
    for name, role in people.items():
        lines.append(f"  {ROLES[role]:<6} {url}/console/login?u={name}&next={HOME[role]}")
    return "\n".join(lines) + "\n"


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("demo")(demo)
