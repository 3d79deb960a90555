"""FastAPI dependencies: a connection per request, and filing reports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from anyio import CapacityLimiter, to_thread
from fastapi import Request
from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from geo.incidents import ReportResult


async def get_connection(request: Request) -> AsyncIterator[Connection]:
    """A connection in one transaction, committed when the handler returns normally and
    rolled back when it raises.

    Requests queue for a connection on the event loop (``app.state.connection_slots``, fewer
    than the pool holds), never in a worker thread: with the checkout in a thread, threads
    blocked on an exhausted pool starved the requests holding connections of the threads they
    needed to finish, and everything waited for the pool timeout (150 concurrent requests on a
    4-connection pool: 120 answers 500 after 30 s).
    """
    async with request.app.state.connection_slots:
        conn = await to_thread.run_sync(_begin, request.app.state.engine)
        try:
            yield conn
        except BaseException:
            await to_thread.run_sync(_end, conn, False)
            raise
        await to_thread.run_sync(_end, conn, True)


def _begin(engine: Engine) -> Connection:
    conn = engine.connect()
    conn.begin()
    return conn


def _end(conn: Connection, commit: bool) -> None:
    try:
        if commit:
            conn.commit()
        else:
            conn.rollback()
    finally:
        conn.close()


def connection_slots(engine: Engine, reserved: int) -> CapacityLimiter:
    """How many requests may hold a pooled connection at once: the pool's size and overflow,
    less ``reserved`` connections kept for the report writers and background work."""
    pool = engine.pool
    capacity = pool.size() + max(0, getattr(pool, "_max_overflow", 0))
    return CapacityLimiter(max(1, capacity - reserved))


async def file_report(request: Request, **report_args: Any) -> ReportResult:
    """File one report (``geo.incidents.report``'s arguments) through the app's
    ``ReportWriter``; returns after the commit that made it durable, or raises its error."""
    return await asyncio.wrap_future(request.app.state.report_writer.submit(**report_args))
