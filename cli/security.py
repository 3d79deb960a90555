"""``wangge user add`` and ``wangge apikey create``: accounts and keys."""

from __future__ import annotations

import typer

from cli.common import connection, domain_errors
from geo.auth.service import AuthSettings, create_api_key, create_user

user_app = typer.Typer(help="User accounts with roles scoped by area.", no_args_is_help=True)
key_app = typer.Typer(help="API keys for other systems.", no_args_is_help=True)


@user_app.command("add")
@domain_errors
def add_user(
    username: str = typer.Argument(..., help="Login name."),
    role: str = typer.Option(..., help="resident|grid_worker|department_staff|planner|"
                                       "commander|admin"),
    area: str = typer.Option(None, help="Scope: an area code (6, 9, 12 or 15 digits)."),
    department: int = typer.Option(None, help="Department id (department staff)."),
    password: str = typer.Option(..., prompt=True, hide_input=True,
                                 confirmation_prompt=True, help="Password."),
) -> None:
    """Create a user account."""
    with connection() as conn:
        uid = create_user(conn, username, password, role, area_code=area,
                          department_id=department, settings=AuthSettings())
    typer.echo(f"user {username} ({role}) created with id {uid}")


@key_app.command("create")
@domain_errors
def new_key(
    name: str = typer.Argument(..., help="The system's name, e.g. hotline-12345."),
    scope: list[str] = typer.Option(["lookup", "open311"], help="lookup and/or open311."),
    rate: int = typer.Option(6000, help="Requests per minute."),
) -> None:
    """Create an API key; it is printed once and stored hashed."""
    with connection() as conn:
        key = create_api_key(conn, name, scopes=tuple(scope), rate_per_minute=rate)
    typer.echo(key)


def register(app: typer.Typer) -> None:
    app.add_typer(user_app, name="user")
    app.add_typer(key_app, name="apikey")
