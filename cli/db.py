"""``wangge db start|stop|status|url|migrate``: the embedded cluster."""

from __future__ import annotations

import typer

from geo.core import embedded
from geo.core.db import migrate, resolve_url
from geo.core.settings import DatabaseSettings

db_app = typer.Typer(help="The embedded PostgreSQL + PostGIS + pgRouting cluster.",
                     no_args_is_help=True)


@db_app.command("start")
def start(
    standby: bool = typer.Option(False, "--standby", help="Also create (once) and start a "
                                 "streaming hot standby of it (see geo/core/replica.py)."),
    synchronous: bool = typer.Option(None, "--sync/--async", help="With --standby: commits "
                                     "wait for the standby (synchronous_standby_names)."),
    apply: bool = typer.Option(False, "--apply", help="With --sync: commits wait until the "
                               "standby has applied them (synchronous_commit = remote_apply), "
                               "so reads there see every acknowledged write."),
) -> None:
    """Initialise (first time) and start the embedded cluster. Idempotent."""
    settings = DatabaseSettings()
    st = embedded.start(settings)
    typer.echo(f"running on 127.0.0.1:{st.port} (pid {st.pid}, data {st.pgdata})")
    if standby:
        from geo.core import replica

        sb = replica.create_standby(settings)
        if synchronous is not None:
            replica.set_synchronous(settings, synchronous, apply=apply)
        typer.echo(f"standby on 127.0.0.1:{sb.port} (pid {sb.pid}, data {sb.pgdata}); "
                   f"WANGGE_READ_DATABASE_URL={replica.standby_url(settings)}")
        for r in replica.replication_state(settings):
            typer.echo(f"  {r['name']}: {r['state']}, {r['sync_state']}")


@db_app.command("promote")
def promote() -> None:
    """Make the standby the primary (the old primary is stopped and its data set aside)."""
    from geo.core import replica

    st = replica.promote(DatabaseSettings())
    typer.echo(f"promoted: primary on 127.0.0.1:{st.port} (pid {st.pid}, data {st.pgdata})")


@db_app.command("stop")
def stop() -> None:
    """Stop the embedded cluster (and its standby), leaving no process behind. Idempotent."""
    from geo.core.replica import standby_settings

    embedded.stop(standby_settings(DatabaseSettings()))
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
    from cli.common import prepare_incident_months
    from geo.core.db import make_engine

    url = resolve_url(DatabaseSettings())
    migrate(url, revision)
    if revision == "head":
        eng = make_engine(url, pool_size=1)
        try:
            prepare_incident_months(eng)
        finally:
            eng.dispose()
    typer.echo(f"schema at {revision}")


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
