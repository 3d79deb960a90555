"""Turn domain errors into clear 4xx/5xx JSON answers. Installed with one call."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError

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


# PostgreSQL SQLSTATE of an integrity violation -> (HTTP status, reason). A duplicate or an
# exclusion clash is a conflict with stored state (409); the others are bad input (422).
_INTEGRITY = {
    "23505": (409, "already exists"),
    "23P01": (409, "clashes with an existing row"),
    "23503": (422, "refers to something that does not exist"),
    "23502": (422, "is required"),
    "23514": (422, "breaks a rule"),
}
# Check constraints whose field is not in their name's tail.
_CONSTRAINT_FIELD = {
    "app_user_staff_have_department": "department_id",
    "app_user_scoped_roles_have_area": "area_code",
    "app_user_role_known": "role",
    "app_user_area_code_rule": "area_code",
}
_KEY_COLUMNS = re.compile(r"Key \(([^)]*)\)")


def integrity_problem(exc: IntegrityError) -> tuple[int, str, str]:
    """(status, field, reason) of a constraint violation, read from the driver's diagnostics:
    never the statement, its parameters or the failing row's values."""
    orig = exc.orig
    code = getattr(orig, "pgcode", None) or ""
    diag = getattr(orig, "diag", None)
    constraint = getattr(diag, "constraint_name", None) or ""
    column = getattr(diag, "column_name", None)
    key = _KEY_COLUMNS.search(getattr(diag, "message_detail", None) or "")
    field = (column or _CONSTRAINT_FIELD.get(constraint) or (key.group(1) if key else None)
             or constraint or "body")
    status, reason = _INTEGRITY.get(code, (409, "conflicts with stored data"))
    if constraint:
        reason = f"{reason} (constraint {constraint})"
    return status, field, reason


def _json_safe(value: object) -> object:
    """``value`` if it can be written as JSON (finite numbers, UTF-8 text) in at most
    ``_ECHO_CHARS`` characters; else the start of its repr (a 3 MB field is not echoed)."""
    try:
        dumped = json.dumps(value, allow_nan=False, ensure_ascii=False)
        dumped.encode("utf-8")
    except (ValueError, TypeError):
        return repr(value)[:_ECHO_CHARS]
    if len(dumped) > _ECHO_CHARS:
        return dumped[:_ECHO_CHARS] + f"… ({len(dumped)} characters)"
    return value


_ECHO_CHARS = 200


OPEN311_PREFIX = "/open311/"


def answer(request: Request, content: dict[str, Any], status_code: int,
           headers: dict[str, str] | None = None) -> JSONResponse:
    """An error answer: ``{"error", "detail", "problems"}``, or under ``/open311/`` the
    GeoReport v2 error list ``[{"code", "description"}]`` (every error there, 401/429/503
    included, is in the format Open311 clients read)."""
    if request.url.path.startswith(OPEN311_PREFIX):
        return JSONResponse(open311_errors(status_code, content), status_code=status_code,
                            headers=headers)
    return JSONResponse(content, status_code=status_code, headers=headers)


def open311_errors(status: int, content: dict[str, Any]) -> list[dict[str, Any]]:
    detail = str(content.get("detail") or content.get("error") or "error")
    if isinstance(content.get("detail"), list):  # FastAPI's validation errors
        return [{"code": status, "description": f"{'.'.join(map(str, e.get('loc', [])))}: "
                 f"{e.get('msg', '')}"} for e in content["detail"]] or [
            {"code": status, "description": "invalid request"}]
    problems = content.get("problems") or []
    described = [f"{detail}: {p.get('field') + ': ' if p.get('field') else ''}"
                 f"{p.get('reason', '')}" for p in problems if isinstance(p, dict)]
    return [{"code": status, "description": d} for d in described or [detail]]


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
        return answer(request, error_body(exc), status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes each input back; one that JSON cannot carry (NaN, a lone
        # surrogate) made that echo itself fail with a 500.
        errs = [{**e, "input": _json_safe(jsonable_encoder(e.get("input")))} if "input" in e
                else e for e in exc.errors()]
        return answer(request, {"detail": jsonable_encoder(errs)}, status_code=422)

    @app.exception_handler(IntegrityError)
    async def _integrity(request: Request, exc: IntegrityError) -> JSONResponse:
        status, field, reason = integrity_problem(exc)
        log.info("refused by a constraint: %s %s", field, reason)  # no statement, no values
        return answer(request, 
            {"error": "Conflict" if status == 409 else "InvalidInput",
             "detail": f"{field} {reason}", "problems": [{"field": field, "reason": reason}]},
            status_code=status)

    @app.exception_handler(OperationalError)
    async def _db_down(request: Request, exc: OperationalError) -> JSONResponse:
        log.warning("database unavailable: %s", str(exc).splitlines()[0])
        return answer(request, 
            {"error": "DatabaseUnavailable", "detail": "the database is unavailable; retry"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(ValueError)
    async def _nul_in_text(request: Request, exc: ValueError) -> JSONResponse:
        # psycopg2 refuses text with NUL bytes before it reaches PostgreSQL.
        if "NUL (0x00)" not in str(exc):
            raise exc
        return answer(request, 
            {"error": "InvalidInput", "detail": "text may not contain NUL (0x00) characters",
             "problems": [{"reason": "contains a NUL (0x00) character"}]},
            status_code=422,
        )

    @app.exception_handler(DataError)
    async def _bad_value(request: Request, exc: DataError) -> JSONResponse:
        # A value the database cannot take (a time zone out of range, a number too large):
        # the caller's input, not a server fault.
        reason = str(exc.orig).splitlines()[0] if exc.orig else "invalid value"
        return answer(request, 
            {"error": "InvalidInput", "detail": f"a value was refused: {reason}",
             "problems": [{"reason": reason}]},
            status_code=422,
        )

    @app.exception_handler(DBAPIError)
    async def _db_error(request: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated:
            return answer(request, 
                {"error": "DatabaseUnavailable", "detail": "the database connection was lost"},
                status_code=503,
                headers={"Retry-After": "5"},
            )
        raise exc
