"""``wangge serve``: the HTTP API under uvicorn."""

from __future__ import annotations

import os

import typer
import uvicorn

from geo.core.settings import ApiSettings


def serve(
    host: str = typer.Option(None, help="监听地址（默认 WANGGE_HOST）。"),
    port: int = typer.Option(None, help="端口（默认 WANGGE_PORT）。"),
    workers: int = typer.Option(1, help="uvicorn 工作进程数。"),
) -> None:
    """启动 API 服务，OpenAPI 文档位于 /docs。"""
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
    port: int = typer.Option(None, help="端口（默认 WANGGE_PORT）。"),
    password: str = typer.Option(None, envvar="WANGGE_DEMO_PASSWORD",
                                 help="demo-admin 账号的密码（默认：随机生成"
                                 "并打印）。"),
) -> None:
    """启动内置数据库、迁移、载入演示区并启动 API 服务。

    打印 ``demo-admin`` 的账号密码：在 /docs 点 Authorize 登录后即可试用全部接口。
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
    typer.echo(f"\nwangge 演示：{url}/docs  （点 Authorize，账号 {DEMO_ADMIN}，密码 {secret} ）\n"
               f"  令牌：curl -s -d username={DEMO_ADMIN} -d password='{secret}' "
               f"{url}/v1/auth/token\n")
    typer.echo(console_paths(url, people, secret))
    serve(host=None, port=port, workers=1)


def console_paths(url: str, people: dict[str, str], password: str) -> str:
    """The console's address and, per demo role, the path that signs that person in."""
    from api.routers.console import HOME
    from web.messages import ROLES

    lines = [f"控制台：{url}/console  （所有演示账号的密码：{password} ）"]
    for name, role in people.items():
        lines.append(f"  {ROLES[role]:<6} {url}/console/login?u={name}&next={HOME[role]}")
    return "\n".join(lines) + "\n"


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("demo")(demo)
