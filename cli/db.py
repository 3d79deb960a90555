"""``wangge db start|stop|status|url|migrate``: the embedded cluster."""

from __future__ import annotations

import typer

from geo.core import embedded
from geo.core.db import migrate, resolve_url
from geo.core.settings import DatabaseSettings

db_app = typer.Typer(help="内置的 PostgreSQL + PostGIS + pgRouting 数据库集群。",
                     no_args_is_help=True)


@db_app.command("start")
def start(
    standby: bool = typer.Option(False, "--standby", help="同时创建（仅首次）并启动流复制热备库"
                                 "（见 geo/core/replica.py）。"),
    synchronous: bool = typer.Option(None, "--sync/--async", help="提交须等待备库确认（与 "
                                     "--standby 合用），即设置 synchronous_standby_names。"),
    apply: bool = typer.Option(False, "--apply", help="提交须等备库应用完毕（与 --sync 合用），"
                               "即 synchronous_commit = remote_apply， "
                               "使备库读到每一笔已确认的写入。"),
) -> None:
    """初始化（首次）并启动内置数据库集群；可重复执行。"""
    settings = DatabaseSettings()
    st = embedded.start(settings)
    typer.echo(f"运行中：127.0.0.1:{st.port}（pid {st.pid}，数据目录 {st.pgdata}）")
    if standby:
        from geo.core import replica

        sb = replica.create_standby(settings)
        if synchronous is not None:
            replica.set_synchronous(settings, synchronous, apply=apply)
        typer.echo(f"备库：127.0.0.1:{sb.port}（pid {sb.pid}，数据目录 {sb.pgdata}）；"
                   f"WANGGE_READ_DATABASE_URL={replica.standby_url(settings)}")
        for r in replica.replication_state(settings):
            typer.echo(f"  {r['name']}：{r['state']}，{r['sync_state']}")


@db_app.command("promote")
def promote() -> None:
    """将备库提升为主库（原主库停止，其数据目录另行保留）。"""
    from geo.core import replica

    st = replica.promote(DatabaseSettings())
    typer.echo(f"已提升：主库 127.0.0.1:{st.port}（pid {st.pid}，数据目录 {st.pgdata}）")


@db_app.command("stop")
def stop() -> None:
    """停止内置数据库集群（及其备库），不留任何进程；可重复执行。"""
    from geo.core.replica import standby_settings

    embedded.stop(standby_settings(DatabaseSettings()))
    st = embedded.stop(DatabaseSettings())
    typer.echo("已停止" if not st.running else f"仍在运行（pid {st.pid}）")


@db_app.command("status")
def status() -> None:
    """显示内置数据库集群是否在运行；未运行时退出码为 3。"""
    st = embedded.status(DatabaseSettings())
    if st.running:
        typer.echo(f"运行中：127.0.0.1:{st.port}（pid {st.pid}，数据目录 {st.pgdata}）")
    else:
        typer.echo(f"未运行（数据目录 {st.pgdata}）")
        raise typer.Exit(3)


@db_app.command("url")
def url() -> None:
    """打印服务使用的数据库 URL（外部库或内置库）。"""
    typer.echo(resolve_url(DatabaseSettings(), start=False))


@db_app.command("migrate")
def migrate_cmd(revision: str = typer.Argument("head", help="Alembic 迁移版本号。")) -> None:
    """执行 Alembic 迁移，直至 REVISION。"""
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
    typer.echo(f"数据库结构已迁移至 {revision}")


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
