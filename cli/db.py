"""``wangge db start|stop|status|url|migrate``: the embedded cluster."""

from __future__ import annotations

import typer

from geo.core import embedded
from geo.core.db import migrate, resolve_url
from geo.core.settings import DatabaseSettings

db_app = typer.Typer(help="The embedded PostgreSQL + PostGIS + pgRouting cluster.",
                     no_args_is_help=True)


@db_app.command("start")
def start() -> None:
    """Initialise (first time) and start the embedded cluster. Idempotent."""
    st = embedded.start(DatabaseSettings())
    typer.echo(f"running on 127.0.0.1:{st.port} (pid {st.pid}, data {st.pgdata})")


@db_app.command("stop")
def stop() -> None:
    """Stop the embedded cluster, leaving no process behind. Idempotent."""
    st = embedded.stop(DatabaseSettings())
    typer.echo("stopped" if not st.running else f"still running (pid {st.pid})")


@db_app.command("status")
def status() -> None:
    """Say whether the embedded cluster runs; exit 3 if it does not."""
    st = embedded.status(DatabaseSettings())
    if st.running:
        typer.echo(f"running on 127.0.0.1:{st.port} (pid {st.pid}, data {st.pgdata})")
    else:
        typer.echo(f"not running (data {st.pgdata})")
        raise typer.Exit(3)


@db_app.command("url")
def url() -> None:
    """Print the database URL the service uses (external or embedded)."""
    typer.echo(resolve_url(DatabaseSettings(), start=False))


@db_app.command("migrate")
def migrate_cmd(revision: str = typer.Argument("head", help="Alembic revision.")) -> None:
    """Apply the Alembic migrations up to REVISION."""
    migrate(resolve_url(DatabaseSettings()), revision)
    typer.echo(f"schema at {revision}")


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
