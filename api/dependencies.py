"""FastAPI dependencies: the engine and a connection per request."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import Request
from sqlalchemy import Engine
from sqlalchemy.engine import Connection


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_connection(request: Request) -> Iterator[Connection]:
    """A connection in one transaction, committed when the handler returns normally."""
    with request.app.state.engine.begin() as conn:
        yield conn
