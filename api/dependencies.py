"""FastAPI dependencies: the engine, a connection per request, and filing reports."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from fastapi import Request
from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from geo.incidents import ReportResult


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_connection(request: Request) -> Iterator[Connection]:
    """A connection in one transaction, committed when the handler returns normally."""
    with request.app.state.engine.begin() as conn:
        yield conn


async def file_report(request: Request, **report_args: Any) -> ReportResult:
    """File one report (``geo.incidents.report``'s arguments) through the app's
    ``ReportWriter``; returns after the commit that made it durable, or raises its error."""
    return await asyncio.wrap_future(request.app.state.report_writer.submit(**report_args))
