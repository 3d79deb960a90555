"""``wangge user`` and ``wangge apikey``: accounts and keys.

Passwords are never taken on the command line (it shows in ``ps`` and shell history): from
``WANGGE_NEW_PASSWORD`` if set, else from a hidden prompt asked twice.
"""

from __future__ import annotations

import os

import typer

from cli.common import connection, domain_errors, print_json
from geo.auth import accounts
from geo.auth.service import AuthSettings, create_api_key, create_user, new_api_key

user_app = typer.Typer(help="用户账号：按角色授权，权限限于所辖区域。", no_args_is_help=True)
key_app = typer.Typer(help="供其他系统调用的 API 密钥。", no_args_is_help=True)

PASSWORD_ENV = "WANGGE_NEW_PASSWORD"


def _password() -> str:
    return os.environ.get(PASSWORD_ENV) or typer.prompt(
        "密码", hide_input=True, confirmation_prompt="再次输入密码")


@user_app.command("add")
@domain_errors
def add_user(
    username: str = typer.Argument(..., help="登录名。"),
    role: str = typer.Option(..., help="角色（resident | grid_worker | "
                                       "department_staff | planner | commander | admin）"),
    area: str = typer.Option(None, help="权限范围：区域编码（6、9、12 或 15 位）。"),
    department: int = typer.Option(None, help="部门编号（部门人员）。"),
) -> None:
    """创建用户账号；密码取自 WANGGE_NEW_PASSWORD，未设置则提示输入。"""
    password = _password()
    with connection() as conn:
        uid = create_user(conn, username, password, role, area_code=area,
                          department_id=department, settings=AuthSettings())
    typer.echo(f"已创建用户 {username}（{role}），编号 {uid}")


@user_app.command("list")
@domain_errors
def list_users() -> None:
    """列出全部账号：角色、区域、是否启用（不含密码哈希）。"""
    with connection() as conn:
        print_json(accounts.list_users(conn))


@user_app.command("disable")
@domain_errors
def disable_user(username: str = typer.Argument(..., help="登录名。")) -> None:
    """停用账号，其令牌随即失效（其他工作进程最迟 user_cache_seconds 秒后失效）。"""
    with connection() as conn:
        accounts.set_active(conn, username, False)
    typer.echo(f"已停用用户 {username}，其令牌已吊销")


@user_app.command("enable")
@domain_errors
def enable_user(username: str = typer.Argument(..., help="登录名。")) -> None:
    """启用已停用的账号（需重新登录获取新令牌）。"""
    with connection() as conn:
        accounts.set_active(conn, username, True)
    typer.echo(f"已启用用户 {username}")


@user_app.command("revoke-tokens")
@domain_errors
def revoke_tokens(username: str = typer.Argument(..., help="登录名。")) -> None:
    """吊销该账号此前签发的全部令牌。"""
    with connection() as conn:
        accounts.revoke_tokens(conn, username)
    typer.echo(f"已吊销用户 {username} 的令牌")


@key_app.command("create")
@domain_errors
def new_key(
    name: str = typer.Argument(..., help="调用系统的名称，如 hotline-12345。"),
    scope: list[str] = typer.Option(["lookup", "open311"], help="lookup 和/或 open311。"),
    rate: int = typer.Option(6000, help="每分钟请求数上限。"),
    role: str = typer.Option(None, help="角色（grid_worker | planner | commander）："
                             "密钥以该角色用户的身份在 --area 内操作，如 GIS 客户端。"),
    area: str = typer.Option(None, help="带角色的密钥所辖区域编码。"),
) -> None:
    """创建 API 密钥；密钥只打印一次，以哈希形式保存。"""
    with connection() as conn:
        key = create_api_key(conn, name, scopes=tuple(scope), rate_per_minute=rate, role=role,
                             area_code=area)
    typer.echo(key)


@key_app.command("list")
@domain_errors
def list_keys() -> None:
    """列出全部密钥：名称、前几位字符、权限范围、角色、是否已吊销。"""
    with connection() as conn:
        print_json(accounts.list_api_keys(conn))


@key_app.command("revoke")
@domain_errors
def revoke_key(name: str = typer.Argument(..., help="密钥名称。")) -> None:
    """吊销密钥（运行中的工作进程在 api_key_cache_seconds 内停用）。"""
    with connection() as conn:
        accounts.revoke_api_key(conn, name)
    typer.echo(f"已吊销 API 密钥 {name}")


@key_app.command("rotate")
@domain_errors
def rotate_key(name: str = typer.Argument(..., help="密钥名称。")) -> None:
    """为密钥生成新值（只打印一次）；旧值随即失效。"""
    key, hashed = new_api_key()
    with connection() as conn:
        accounts.rotate_api_key(conn, name, key, hashed)
    typer.echo(key)


def register(app: typer.Typer) -> None:
    app.add_typer(user_app, name="user")
    app.add_typer(key_app, name="apikey")
