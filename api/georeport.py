"""The GeoReport v2 wire: JSON or XML answers, the spec's error list, and CORS for Open311.

Every answer of an Open311 path, errors included, is in the format its path names (``.json`` or
``.xml``; JSON otherwise). Errors are the spec's ``[{"code", "description"}]``
(``<errors><error><code/><description/></error></errors>`` in XML) with the spec's status
codes: 400 bad input, 403 a missing, invalid or insufficient ``api_key`` (authentication is
403 in GeoReport, not 401), 404 an unknown request, service, ``jurisdiction_id`` or path. A rate
limit is 429 and an outage 503, both with ``Retry-After`` and the same error list.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Coroutine, Iterable
from typing import Any
from xml.etree import ElementTree as ET

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import _status_for
from api.policy import PolicyRoute
from api.security import RateLimited
from geo.core import errors

log = logging.getLogger(__name__)

FORMATS = ("json", "xml")
# the element name of one item of each list (XML)
ITEM_TAG = {"services": "service", "service_requests": "request", "errors": "error",
            "attributes": "attribute", "values": "value", "endpoints": "endpoint",
            "formats": "format"}
# wangge's status -> GeoReport's: 401 is an api_key problem (403), 409/422 are bad input (400)
SPEC_STATUS = {401: 403, 409: 400, 422: 400}


def fmt_of(path: str) -> str:
    """``xml`` for a path ending in ``.xml``, else ``json``."""
    return "xml" if path.lower().endswith(".xml") else "json"


# characters XML 1.0 cannot carry (C0 controls other than tab, newline, carriage return)
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return _NOT_XML.sub("\ufffd", str(value))


def _fill(el: ET.Element, value: Any, tag: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _fill(ET.SubElement(el, k), v, k)
    elif isinstance(value, list | tuple):
        for v in value:
            child_tag = ITEM_TAG.get(tag, "item")
            _fill(ET.SubElement(el, child_tag), v, child_tag)
    elif value is not None:
        el.text = _text(value)


def to_xml(root: str, value: Any) -> bytes:
    """``value`` (a list of items, or a mapping) as GeoReport XML under ``<root>``."""
    el = ET.Element(root)
    _fill(el, value, root)
    return ET.tostring(el, encoding="utf-8", xml_declaration=True)


def answer(fmt: str, root: str, value: Any, *, status: int = 200,
           headers: dict[str, str] | None = None) -> Response:
    """``value`` as JSON, or as XML under ``<root>``."""
    if fmt == "xml":
        return Response(to_xml(root, value), status_code=status, headers=headers,
                        media_type="text/xml; charset=utf-8")
    return JSONResponse(value, status_code=status, headers=headers)


def error_answer(fmt: str, status: int, descriptions: Iterable[str],
                 headers: dict[str, str] | None = None) -> Response:
    """The spec's error list."""
    return answer(fmt, "errors", [{"code": status, "description": d} for d in descriptions],
                  status=status, headers=headers)


def _descriptions(exc: errors.WanggeError) -> list[str]:
    return [f"{exc.message}: {p}" for p in exc.problems] or [exc.message]


def spec_error(request: Request, exc: Exception) -> Response:
    """Any failure of an Open311 path as the spec's error list (re-raises what it cannot
    name, so that a bug still surfaces as a 500)."""
    fmt = fmt_of(request.url.path)
    if isinstance(exc, RateLimited):
        return error_answer(fmt, 429, [exc.message], {"Retry-After": str(exc.retry_after)})
    if isinstance(exc, errors.WanggeError):
        if isinstance(exc, errors.InvalidInput) and any(
                p.field == "category" for p in exc.problems):
            return error_answer(fmt, 404, [f"service_code not found: {exc.message}"])
        status = _status_for(exc)
        headers = {"Retry-After": "5"} if status == 503 else None
        return error_answer(fmt, SPEC_STATUS.get(status, status), _descriptions(exc), headers)
    if isinstance(exc, RequestValidationError):
        return error_answer(fmt, 400, [
            f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}"
            for e in exc.errors()])
    if isinstance(exc, OperationalError) or (
            isinstance(exc, DBAPIError) and exc.connection_invalidated):
        log.warning("database unavailable: %s", str(exc).splitlines()[0])
        return error_answer(fmt, 503, ["the database is unavailable; retry"],
                            {"Retry-After": "5"})
    raise exc


class Open311Route(PolicyRoute):
    """A ``PolicyRoute`` whose every failure, the access policy's included, is answered in the
    GeoReport error format."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answered(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                return spec_error(request, exc)

        return answered


class PathCORS:
    """CORS (Starlette's ``CORSMiddleware``) for the paths under ``prefix`` only: a browser
    client on another origin may call Open311; the rest of the API stays same-origin."""

    def __init__(self, app: ASGIApp, prefix: str, origins: list[str]) -> None:
        self.app, self.prefix = app, prefix
        self.cors = CORSMiddleware(
            app, allow_origins=origins, allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Content-Type", "X-API-Key", "X-Request-ID", "Accept"],
            expose_headers=["Link", "X-Total-Count", "Retry-After", "X-Request-ID"],
            max_age=600)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)
