"""Helpers shared by the CLI modules: settings, the engine, and turning domain errors into exits."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, TypeVar

import typer
from sqlalchemy import Engine

from geo.core.db import alembic_config, make_engine, migrate, resolve_url, schema_revision
from geo.core.errors import WanggeError
from geo.core.settings import DatabaseSettings

F = TypeVar("F", bound=Callable[..., Any])


def engine(*, migrated: bool = True, create: bool = False) -> Engine:
    """The engine for the configured database (embedded cluster started if needed).

    ``create``: make a new embedded cluster if the state directory holds none (``db start``,
    ``demo``); other commands refuse, naming the directory, so that a mistyped
    WANGGE_STATE_DIR does not silently start an empty cluster. ``migrated``: bring the schema
    to the newest revision, only when it is not there already, without Alembic's chatter."""
    settings = DatabaseSettings()
    if not create:
        require_cluster(settings)
    url = resolve_url(settings)
    eng = make_engine(url, pool_size=settings.pool_size)
    if migrated:
        migrate_if_needed(eng, url)
    return eng


def require_cluster(settings: DatabaseSettings) -> None:
    """Refuse (exit 2) when the embedded cluster is used and ``state_dir`` holds none."""
    if settings.database_url:
        return
    pgdata = settings.state_dir.resolve() / "pgdata"
    if not (pgdata / "PG_VERSION").exists():
        typer.secho(f"错误：{settings.state_dir.resolve()}（WANGGE_STATE_DIR）中没有数据库"
                    "集群。请检查路径，或用 `wangge db start` 新建。", fg=typer.colors.RED,
                    err=True)
        raise typer.Exit(2)


def migrate_if_needed(eng: Engine, url: str) -> None:
    """Migrate to head only if the database is behind; quietly (one log line if it runs)."""
    from alembic.script import ScriptDirectory

    heads = set(ScriptDirectory.from_config(alembic_config(url)).get_heads())
    with eng.connect() as conn:
        current = schema_revision(conn)
    if current in heads:
        return
    alembic_log = logging.getLogger("alembic")
    level = alembic_log.level
    alembic_log.setLevel(logging.WARNING)
    try:
        migrate(url)
    finally:
        alembic_log.setLevel(level)


def prepare_incident_months(eng: Engine) -> None:
    """Make the next 12 months of incident partitions, once, in the process that starts or
    migrates the service (never in an API worker); no DDL, no lock when they exist."""
    from geo.incidents.partitions import ensure_months_ahead

    ensure_months_ahead(eng)


@contextmanager
def connection() -> Iterator[Any]:
    eng = engine()
    try:
        with eng.begin() as conn:
            yield conn
    finally:
        eng.dispose()


def domain_errors(func: F) -> F:
    """Print a domain error's message (and problems) and exit 1, instead of a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except WanggeError as exc:
            typer.secho(f"错误：{exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from exc

    return wrapper  # type: ignore[return-value]


def print_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON (Chinese kept readable; dates and the like as strings)."""
    import json

    typer.echo(json.dumps(obj, ensure_ascii=False, indent=2, default=str))
