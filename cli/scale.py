"""``wangge proxy`` (N workers behind HAProxy) and ``wangge scale lookup-file`` (Dask)."""

from __future__ import annotations

import signal
from pathlib import Path

import typer

from cli.common import domain_errors
from geo.core.settings import ApiSettings, DatabaseSettings

scale_app = typer.Typer(help="在 Dask 集群上运行批处理。", no_args_is_help=True)


@domain_errors
def proxy(
    workers: int = typer.Option(2, "--workers", "-w", help="API 工作进程数。"),
    host: str = typer.Option(None, help="HAProxy 监听地址（默认 WANGGE_HOST）。"),
    port: int = typer.Option(None, help="HAProxy 端口（默认 WANGGE_PORT）。"),
) -> None:
    """以 HAProxy 后的 N 个工作进程提供 API，进程退出即重启；Ctrl-C 停止。"""
    from cli.common import engine
    from geo.scale.proxy import WorkerPool

    settings, db = ApiSettings(), DatabaseSettings()
    engine().dispose()  # start and migrate the database once, before the workers race to
    pool = WorkerPool(workers, host=host or settings.host, port=port or settings.port,
                      state_dir=db.state_dir, log_level=settings.log_level)
    pool.start()
    typer.echo(f"HAProxy 监听 http://{pool.host}:{pool.port} -> {len(pool.workers)} 个工作进程，"
               f"Unix 套接字 {pool.run_dir}/worker-N.sock（日志也在此目录）")
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
                               help="含 lon、lat 列的 CSV（WGS 84 或 --crs），"
                               "或 Parquet（单个文件或分片目录；lon/lat 为数值；"
                               "数亿个点时的快速通道）。"),
    dst: Path = typer.Argument(..., help="输出 CSV 或 Parquet（按扩展名）。"),
    dask: str = typer.Option(None, "--dask", help="调度器地址（tcp://host:8786），"
                             "或 'local' 表示本机 LocalCluster；默认 "
                             "WANGGE_DASK_SCHEDULER，未设置则为 local。"),
    workers: int = typer.Option(2, "--workers", help="LocalCluster 工作进程数。"),
    crs: str = typer.Option("wgs84", "--crs", help="坐标系（wgs84 | gcj02 | bd09 | cgcs2000）"),
    at: str = typer.Option(None, "--at", help="YYYY-MM-DD：按当日有效的边界查询。"),
    blocksize: str = typer.Option("64MB", "--blocksize", help="CSV 每个分块的字节数。"),
    spatial: bool = typer.Option(True, "--spatial/--file-order", help="CSV 按空间分块"
                                 "（Hilbert 曲线分片）或保持文件原有分块； "
                                 "Parquet 保持原有分片。"),
) -> None:
    """在 Dask 集群上运行 `wangge lookup-file`：输出的列和行与单进程相同。"""
    from geo.core.db import make_engine, resolve_read_url
    from geo.scale.batch import dask_client, lookup_file_dask

    eng = make_engine(resolve_read_url(DatabaseSettings()))
    try:
        with dask_client(dask, workers=workers) as client:
            n, ok = lookup_file_dask(client, eng, src, dst, crs=crs, at=at, blocksize=blocksize,
                                     spatial=spatial)
    finally:
        eng.dispose()
    typer.echo(f"共 {n} 个点，{ok} 个落在网格内，已写入 {dst}")


@scale_app.command("citus-check")
@domain_errors
def citus_check() -> None:
    """列出应用 Citus 方案（docs/operations/scale.md）前数据库结构需做的改动。"""
    from cli.common import connection
    from geo.scale.citus import check_plan

    with connection() as conn:
        changes = check_plan(conn)
    for change in changes:
        typer.echo(str(change))
    typer.echo(f"共 {len(changes)} 项改动")


def register(app: typer.Typer) -> None:
    app.command("proxy")(proxy)
    app.add_typer(scale_app, name="scale")
