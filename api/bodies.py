"""One gate for every JSON request body: NaN, ±Infinity and lone surrogates are refused (422).

Python's ``json`` reads ``NaN``, ``Infinity`` and ``1e999`` (→ inf) as floats and ``"\\ud800"``
as a string that cannot be encoded as UTF-8; such values then broke the 422 echo (not JSON
compliant) or the database (cannot encode). ``JsonGuardMiddleware`` reads each JSON body once,
and only when a cheap byte scan finds a suspect token does it parse and walk the body, so
ordinary bodies (a 200k-point batch) pay a few ``bytes in`` scans. A refusal names the field
by its path.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import OPEN311_PREFIX, open311_errors

# What can only come from a non-finite number or an escaped surrogate: NaN, Infinity, an
# exponent of three or more digits (1e999), or a \uD800-\uDFFF escape. Literal tokens are
# found with ``in`` (memchr speed); the regexes run only when their first byte occurs at all.
_EXPONENT = re.compile(rb"[eE]\+?0*[1-9]\d{2}")
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


def _suspect(body: bytes) -> bool:
    return (b"NaN" in body or b"Infinity" in body
            or (b"\\u" in body and _SURROGATE.search(body) is not None)
            or ((b"e" in body or b"E" in body) and _EXPONENT.search(body) is not None))


class _Constant:
    """Stands in for a ``NaN``/``Infinity``/``-Infinity`` token while the body is walked."""

    def __init__(self, name: str) -> None:
        self.name = name


def _walk(value: Any, path: str) -> str | None:
    """The path and reason of the first value JSON (RFC 8259) or UTF-8 cannot carry, if any."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, _Constant):
            return f"{where}: {item.name} is not a JSON number (NaN and ±Infinity are refused)"
        if isinstance(item, float):
            if not math.isfinite(item):
                return f"{where}: number out of range (NaN and ±Infinity are not JSON)"
        elif isinstance(item, str):
            if not _utf8(item):
                return f"{where}: text holds a lone UTF-16 surrogate"
        elif isinstance(item, dict):
            for k, v in item.items():
                if not _utf8(k):
                    return f"{where}: a key holds a lone UTF-16 surrogate"
                stack.append((v, f"{where}.{k}"))
        elif isinstance(item, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))
    return None


def _utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def json_body_problem(body: bytes) -> str | None:
    """Why ``body`` (JSON) is refused, naming the field (``body.x[2]``); None if it is fine or
    is not JSON at all (the framework answers that with its own 422)."""
    if not _suspect(body):
        return None
    try:
        parsed = json.loads(body, parse_constant=_Constant)
    except (ValueError, RecursionError):
        return None
    return _walk(parsed, "body")


def refusal(reason: str, path: str = "") -> JSONResponse:
    field, _, why = reason.partition(": ")
    content = {"error": "InvalidInput", "detail": f"refused JSON value at {field}: {why}",
               "problems": [{"field": field, "reason": why}]}
    if path.startswith(OPEN311_PREFIX):
        return JSONResponse(open311_errors(422, {**content, "detail": "refused JSON value"}),
                            status_code=422)
    return JSONResponse(content, status_code=422)


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers") or []:
        if name == b"content-type":
            ctype = value.split(b";")[0].strip().lower()
            return ctype == b"application/json" or ctype.endswith(b"+json")
    return False


class JsonGuardMiddleware:
    """Pure ASGI: buffers a JSON request body, refuses it (422) if ``json_body_problem`` says
    so, else replays it unchanged to the app. Other bodies pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH") \
                or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message], receive), send)
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        problem = json_body_problem(body)
        if problem is not None:
            await refusal(problem, scope.get("path", ""))(scope, receive, send)
            return
        await self.app(scope, _replay([{"type": "http.request", "body": body,
                                        "more_body": False}], receive), send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    async def replayed() -> Message:
        if messages:
            return messages.pop(0)
        return await receive()

    return replayed
