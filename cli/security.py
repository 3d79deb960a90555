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

user_app = typer.Typer(help="User accounts with roles scoped by area.", no_args_is_help=True)
key_app = typer.Typer(help="API keys for other systems.", no_args_is_help=True)

PASSWORD_ENV = "WANGGE_NEW_PASSWORD"


def _password() -> str:
    return os.environ.get(PASSWORD_ENV) or typer.prompt(
        "Password", hide_input=True, confirmation_prompt=True)


@user_app.command("add")
@domain_errors
def add_user(
    username: str = typer.Argument(..., help="Login name."),
    role: str = typer.Option(..., help="resident|grid_worker|department_staff|planner|"
                                       "commander|admin"),
    area: str = typer.Option(None, help="Scope: an area code (6, 9, 12 or 15 digits)."),
    department: int = typer.Option(None, help="Department id (department staff)."),
) -> None:
    """Create a user account; the password comes from WANGGE_NEW_PASSWORD or a prompt."""
    password = _password()
    with connection() as conn:
        uid = create_user(conn, username, password, role, area_code=area,
                          department_id=department, settings=AuthSettings())
    typer.echo(f"user {username} ({role}) created with id {uid}")


@user_app.command("list")
@domain_errors
def list_users() -> None:
    """Every account: role, area, active (never a password hash)."""
    with connection() as conn:
        print_json(accounts.list_users(conn))


@user_app.command("disable")
@domain_errors
def disable_user(username: str = typer.Argument(..., help="Login name.")) -> None:
    """Disable an account; its tokens stop working (other workers: within user_cache_seconds)."""
    with connection() as conn:
        accounts.set_active(conn, username, False)
    typer.echo(f"user {username} disabled; its tokens are revoked")


@user_app.command("enable")
@domain_errors
def enable_user(username: str = typer.Argument(..., help="Login name.")) -> None:
    """Enable a disabled account (it signs in again for a new token)."""
    with connection() as conn:
        accounts.set_active(conn, username, True)
    typer.echo(f"user {username} enabled")


@user_app.command("revoke-tokens")
@domain_errors
def revoke_tokens(username: str = typer.Argument(..., help="Login name.")) -> None:
    """Refuse every token issued to the account so far."""
    with connection() as conn:
        accounts.revoke_tokens(conn, username)
    typer.echo(f"tokens of {username} revoked")


@key_app.command("create")
@domain_errors
def new_key(
    name: str = typer.Argument(..., help="The system's name, e.g. hotline-12345."),
    scope: list[str] = typer.Option(["lookup", "open311"], help="lookup and/or open311."),
    rate: int = typer.Option(6000, help="Requests per minute."),
    role: str = typer.Option(None, help="grid_worker|planner|commander: the key acts as a "
                             "user of this role in --area (e.g. a GIS client)."),
    area: str = typer.Option(None, help="Area code of a key with a role."),
) -> None:
    """Create an API key; it is printed once and stored hashed."""
    with connection() as conn:
        key = create_api_key(conn, name, scopes=tuple(scope), rate_per_minute=rate, role=role,
                             area_code=area)
    typer.echo(key)


@key_app.command("list")
@domain_errors
def list_keys() -> None:
    """Every key: name, first characters, scopes, role, revoked or not."""
    with connection() as conn:
        print_json(accounts.list_api_keys(conn))


@key_app.command("revoke")
@domain_errors
def revoke_key(name: str = typer.Argument(..., help="The key's name.")) -> None:
    """Revoke a key (running workers drop it within api_key_cache_seconds)."""
    with connection() as conn:
        accounts.revoke_api_key(conn, name)
    typer.echo(f"API key {name} revoked")


@key_app.command("rotate")
@domain_errors
def rotate_key(name: str = typer.Argument(..., help="The key's name.")) -> None:
    """Give a key a new value (printed once); the old value stops working."""
    key, hashed = new_api_key()
    with connection() as conn:
        accounts.rotate_api_key(conn, name, key, hashed)
    typer.echo(key)


def register(app: typer.Typer) -> None:
    app.add_typer(user_app, name="user")
    app.add_typer(key_app, name="apikey")
