"""FastAPI dependencies: a connection per request (the primary's, or a read-only one that a hot
standby may serve), the app's settings, and filing reports."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Generic, TypeVar

from anyio import CapacityLimiter, to_thread
from fastapi import Depends, Request
from pydantic_settings import BaseSettings
from sqlalchemy import Engine
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError
from starlette.types import Scope

from api.read_routing import wrote_recently
from geo.incidents import ReportResult

log = logging.getLogger(__name__)
READ_RETRY_S = 5.0  # a standby that did not answer is asked again after this many seconds


def pooled_connection(state: Any) -> AbstractAsyncContextManager[Connection]:
    """A connection of the app (``state`` is ``app.state``) in one transaction, committed when
    the block ends normally and rolled back when it raises. The one way the API opens one
    (handlers through ``CONNECTION``; the API-key check and map builds directly).

    Callers queue for a connection on the event loop (``state.connection_slots``, fewer than
    the pool holds), never in a worker thread: with the checkout in a thread, threads blocked
    on an exhausted pool starved the requests holding connections of the threads they needed
    to finish, and everything waited for the pool timeout (150 concurrent requests on a
    4-connection pool: 120 answers 500 after 30 s).
    """
    return _held(state.connection_slots, lambda: _begin(state.engine))


def read_connection(state: Any, scope: Scope | None = None
                    ) -> AbstractAsyncContextManager[Connection]:
    """A connection for read-only work in one READ ONLY transaction, on ``read_engine(state)``:
    a hot standby when one is configured (``WANGGE_READ_DATABASE_URL`` or ``wangge db start
    --standby``), else the primary's engine itself. Queued like ``pooled_connection`` (on
    ``state.read_connection_slots``, the standby pool's own limiter; the primary's when they
    are one engine). The request's ``scope``, when given, sends a caller who wrote a moment ago
    to the primary (``api.read_routing``); a standby that does not answer sends everyone there
    for ``READ_RETRY_S`` (after ``wangge db promote`` it is gone). A standby replays the
    primary's WAL a little behind it: use this only where another caller's change may show
    that much later (docs/operations/scale.md)."""
    if scope is not None and wrote_recently(scope):
        return _held(state.connection_slots, lambda: _begin_read(state.engine))
    return _held(read_slots(state), lambda: _begin_read_or_primary(state))


@asynccontextmanager
async def _held(slots: CapacityLimiter, begin: Callable[[], Connection]
                ) -> AsyncIterator[Connection]:
    async with slots:
        conn = await to_thread.run_sync(begin)
        try:
            yield conn
        except BaseException:
            await to_thread.run_sync(_end, conn, False)
            raise
        await to_thread.run_sync(_end, conn, True)


async def get_connection(request: Request) -> AsyncIterator[Connection]:
    """Dependency: the request's connection (``pooled_connection``); use it as ``CONNECTION``."""
    async with pooled_connection(request.app.state) as conn:
        yield conn


async def get_read_connection(request: Request) -> AsyncIterator[Connection]:
    """Dependency: a read-only connection (``read_connection``); use it as ``READ_CONNECTION``."""
    async with read_connection(request.app.state, request.scope) as conn:
        yield conn


# The one way a handler gets a connection: ``conn: Connection = CONNECTION``. Scoped to the
# handler ("function"), so the transaction commits (or rolls back) before the response is sent:
# a 2xx always means the change is durable, and the caller's next request sees it.
CONNECTION: Any = Depends(get_connection, scope="function")

# Read-only routes that may be answered from a hot standby: ``conn: Connection =
# READ_CONNECTION``. Never for a read that must see the caller's own just-committed write.
READ_CONNECTION: Any = Depends(get_read_connection, scope="function")


def read_engine(state: Any) -> Engine:
    """The engine for read-only work: the standby's, else (none configured, or it did not
    answer within the last ``READ_RETRY_S``) the primary's."""
    engine: Engine = getattr(state, "read_engine", None) or state.engine
    if engine is not state.engine and getattr(state, "read_down_until", 0.0) > time.monotonic():
        return state.engine  # type: ignore[no-any-return]
    return engine


def read_slots(state: Any) -> CapacityLimiter:
    """The limiter of ``read_engine``'s pool (``connection_slots`` when it is the primary's)."""
    slots: CapacityLimiter = getattr(state, "read_connection_slots", None) \
        or state.connection_slots
    return slots


def _begin(engine: Engine) -> Connection:
    conn = engine.connect()
    conn.begin()
    return conn


def _begin_read(engine: Engine) -> Connection:
    conn = _begin(engine)
    try:
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")
    except BaseException:
        _end(conn, False)
        raise
    return conn


def _begin_read_or_primary(state: Any) -> Connection:
    """``_begin_read`` on ``read_engine(state)``; when a standby does not answer, note it
    (``state.read_down_until``) and begin on the primary instead."""
    engine = read_engine(state)
    try:
        return _begin_read(engine)
    except OperationalError as exc:
        if engine is state.engine:
            raise
        state.read_down_until = time.monotonic() + READ_RETRY_S
        log.warning("the read database does not answer (%s): read-only work goes to the "
                    "primary for %.0f s", str(exc).splitlines()[0][:200], READ_RETRY_S)
        return _begin_read(state.engine)


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


S = TypeVar("S", bound=BaseSettings)


class AppSettings(Generic[S]):
    """Dependency: the app's settings of one kind, kept in ``app.state.<attr>`` (set at start-up
    or by a test), else read once from the environment and kept there."""

    def __init__(self, kind: type[S], attr: str) -> None:
        self.kind, self.attr = kind, attr

    def __call__(self, request: Request) -> S:
        settings: S | None = getattr(request.app.state, self.attr, None)
        if settings is None:
            settings = self.kind()
            setattr(request.app.state, self.attr, settings)
        return settings
