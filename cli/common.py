"""Helpers shared by the CLI modules: settings, the engine, and turning domain errors into exits."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, TypeVar

import typer
from sqlalchemy import Engine

from geo.core.db import make_engine, migrate, resolve_url
from geo.core.errors import WanggeError
from geo.core.settings import DatabaseSettings

F = TypeVar("F", bound=Callable[..., Any])


def engine(*, migrated: bool = True) -> Engine:
    """The engine for the configured database (embedded cluster started if needed)."""
    settings = DatabaseSettings()
    url = resolve_url(settings)
    if migrated:
        migrate(url)
    return make_engine(url, pool_size=settings.pool_size)


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
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from exc

    return wrapper  # type: ignore[return-value]


def print_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON (Chinese kept readable; dates and the like as strings)."""
    import json

    typer.echo(json.dumps(obj, ensure_ascii=False, indent=2, default=str))
