"""Turn domain errors into clear 4xx/5xx JSON answers. Installed with one call."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, OperationalError

from geo.core import errors

log = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[errors.WanggeError], int] = {
    errors.InvalidInput: 422,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.PayloadTooLarge: 413,
    errors.Forbidden: 403,
    errors.Unauthenticated: 401,
    errors.DatabaseUnavailable: 503,
}


def _status_for(exc: errors.WanggeError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 400


def error_body(exc: errors.WanggeError) -> dict:
    return {
        "error": type(exc).__name__,
        "detail": exc.message,
        "problems": [p.as_dict() for p in exc.problems],
    }


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.WanggeError)
    async def _domain(request: Request, exc: errors.WanggeError) -> JSONResponse:
        status = _status_for(exc)
        headers = {"Retry-After": "5"} if status == 503 else None
        return JSONResponse(error_body(exc), status_code=status, headers=headers)

    @app.exception_handler(OperationalError)
    async def _db_down(request: Request, exc: OperationalError) -> JSONResponse:
        log.warning("database unavailable: %s", str(exc).splitlines()[0])
        return JSONResponse(
            {"error": "DatabaseUnavailable", "detail": "the database is unavailable; retry"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(ValueError)
    async def _nul_in_text(request: Request, exc: ValueError) -> JSONResponse:
        # psycopg2 refuses text with NUL bytes before it reaches PostgreSQL.
        if "NUL (0x00)" not in str(exc):
            raise exc
        return JSONResponse(
            {"error": "InvalidInput", "detail": "text may not contain NUL (0x00) characters",
             "problems": [{"reason": "contains a NUL (0x00) character"}]},
            status_code=422,
        )

    @app.exception_handler(DataError)
    async def _bad_value(request: Request, exc: DataError) -> JSONResponse:
        # A value the database cannot take (a time zone out of range, a number too large):
        # the caller's input, not a server fault.
        reason = str(exc.orig).splitlines()[0] if exc.orig else "invalid value"
        return JSONResponse(
            {"error": "InvalidInput", "detail": f"a value was refused: {reason}",
             "problems": [{"reason": reason}]},
            status_code=422,
        )

    @app.exception_handler(DBAPIError)
    async def _db_error(request: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated:
            return JSONResponse(
                {"error": "DatabaseUnavailable", "detail": "the database connection was lost"},
                status_code=503,
                headers={"Retry-After": "5"},
            )
        raise exc
