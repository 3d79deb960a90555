"""``wangge proxy`` (N workers behind HAProxy) and ``wangge scale lookup-file`` (Dask)."""

from __future__ import annotations

import signal
from pathlib import Path

import typer

from cli.common import domain_errors
from geo.core.settings import ApiSettings, DatabaseSettings

scale_app = typer.Typer(help="Batch work on a Dask cluster.", no_args_is_help=True)


@domain_errors
def proxy(
    workers: int = typer.Option(2, "--workers", "-w", help="API worker processes."),
    host: str = typer.Option(None, help="HAProxy bind address (default WANGGE_HOST)."),
    port: int = typer.Option(None, help="HAProxy port (default WANGGE_PORT)."),
) -> None:
    """Serve the API as N workers behind HAProxy; restart any worker that dies. Ctrl-C stops."""
    from cli.common import engine
    from geo.scale.proxy import WorkerPool

    settings, db = ApiSettings(), DatabaseSettings()
    engine().dispose()  # start and migrate the database once, before the workers race to
    pool = WorkerPool(workers, host=host or settings.host, port=port or settings.port,
                      state_dir=db.state_dir, log_level=settings.log_level)
    pool.start()
    typer.echo(f"HAProxy on http://{pool.host}:{pool.port} -> {len(pool.workers)} workers on "
               f"Unix sockets {pool.run_dir}/worker-N.sock (logs there too)")
    signal.signal(signal.SIGTERM, lambda *_: pool.stop())
    try:
        pool.supervise()
    except KeyboardInterrupt:
        pass
    finally:
        pool.stop()


@scale_app.command("lookup-file")
@domain_errors
def lookup_file(
    src: Path = typer.Argument(..., exists=True,
                               help="CSV with lon and lat columns (WGS 84, or --crs), or "
                               "Parquet (a file or a folder of parts; numeric lon/lat; "
                               "the fast path for hundreds of millions of points)."),
    dst: Path = typer.Argument(..., help="Output CSV or Parquet (by extension)."),
    dask: str = typer.Option(None, "--dask", help="Scheduler address (tcp://host:8786), or "
                             "'local' for a LocalCluster on this machine; default "
                             "WANGGE_DASK_SCHEDULER, else local."),
    workers: int = typer.Option(2, "--workers", help="LocalCluster worker processes."),
    crs: str = typer.Option("wgs84", "--crs", help="wgs84 | gcj02 | bd09 | cgcs2000"),
    at: str = typer.Option(None, "--at", help="YYYY-MM-DD: boundaries in force that day."),
    blocksize: str = typer.Option("64MB", "--blocksize", help="CSV bytes per partition."),
    spatial: bool = typer.Option(True, "--spatial/--file-order", help="CSV: partition the "
                                 "points spatially (Hilbert patches), or keep the file's "
                                 "blocks. Parquet keeps its parts."),
) -> None:
    """`wangge lookup-file` on a Dask cluster: same columns and rows as the single process."""
    from geo.core.db import make_engine, resolve_read_url
    from geo.scale.batch import dask_client, lookup_file_dask

    eng = make_engine(resolve_read_url(DatabaseSettings()))
    try:
        with dask_client(dask, workers=workers) as client:
            n, ok = lookup_file_dask(client, eng, src, dst, crs=crs, at=at, blocksize=blocksize,
                                     spatial=spatial)
    finally:
        eng.dispose()
    typer.echo(f"{n} points, {ok} in a grid, written to {dst}")


@scale_app.command("citus-check")
@domain_errors
def citus_check() -> None:
    """List what the schema needs before the Citus plan (docs/operations/scale.md) applies."""
    from cli.common import connection
    from geo.scale.citus import check_plan

    with connection() as conn:
        changes = check_plan(conn)
    for change in changes:
        typer.echo(str(change))
    typer.echo(f"{len(changes)} change(s)")


def register(app: typer.Typer) -> None:
    app.command("proxy")(proxy)
    app.add_typer(scale_app, name="scale")
