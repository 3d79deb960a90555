"""Request plumbing for every route: request ids, body-size limit, log redaction, who is calling.

- Each request gets an ``X-Request-ID`` (the caller's, or a new one); every log line carries it.
- Bodies larger than ``ApiSettings.max_body_bytes`` are refused with 413 before they are read.
- Log messages are scrubbed of phone numbers, passwords, API keys and bearer tokens.
- ``require(...)`` is the dependency that admits a principal by role or API-key scope, and
  per-key rate limits answer 429 with ``Retry-After``.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import hashlib
import json
import logging
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import anyio
from fastapi import Depends, FastAPI, Request
from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from geo.auth.service import (
    ANONYMOUS,
    AuthSettings,
    Principal,
    authenticate,
    principal_from_api_key,
    principal_from_token,
)
from geo.core.errors import Forbidden, Unauthenticated, WanggeError

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

_REDACTIONS = [
    (re.compile(r"(?<!\d)(?:\+?86[- ]?)?1[3-9]\d{9}(?!\d)"), "[phone]"),
    (
        re.compile(r"(?i)(password|passwd|secret|api_key|apikey|token)=([^&\s\"']+)"),
        r"\1=[redacted]",
    ),
    (re.compile(r"(?i)bearer\s+[A-Za-z0-9._\-]+"), "Bearer [redacted]"),
    (re.compile(r"wg_[A-Za-z0-9_\-]{20,}"), "[api-key]"),
]


def redact(message: str) -> str:
    """Remove phone numbers and secrets from a log message."""
    for pattern, repl in _REDACTIONS:
        message = pattern.sub(repl, message)
    return message


class RedactingFilter(logging.Filter):
    """Adds ``request_id`` to each record and scrubs its message."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        msg = record.getMessage()
        clean = redact(msg)
        if clean != msg:
            record.msg, record.args = clean, ()
        return True


def install_log_filter() -> None:
    flt = RedactingFilter()
    for name in ("", "uvicorn", "uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(flt)
        for handler in logger.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(flt)


class RequestContextMiddleware:
    """Pure ASGI: request id in and out, and the body-size limit (413)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex
        token = request_id_var.set(rid)
        limit = self.max_body_bytes
        try:
            declared = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            declared = 0
        if declared > limit:
            await _too_large(limit, rid, scope["path"])(scope, receive, send)
            request_id_var.reset(token)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
            return message

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_id)
        except _BodyTooLarge:
            await _too_large(limit, rid, scope["path"])(scope, receive, send)
        finally:
            request_id_var.reset(token)


def _too_large(limit: int, request_id: str, path: str) -> Response:
    if path.startswith("/open311/"):  # in the GeoReport error format, like every Open311 answer
        from api.georeport import error_answer, fmt_of

        return error_answer(fmt_of(path), 413,
                            [f"request body larger than the limit of {limit} bytes"],
                            {"X-Request-ID": request_id})
    return JSONResponse(
        {"error": "PayloadTooLarge",
         "detail": f"request body larger than the limit of {limit} bytes",
         "problems": [{"field": "body", "reason": f"more than {limit} bytes"}]},
        status_code=413, headers={"X-Request-ID": request_id},
    )


class _BodyTooLarge(Exception):
    pass


class RateLimiter:
    """Fixed one-minute windows per key, in process memory."""

    def __init__(self) -> None:
        self._windows: dict[str, tuple[int, int]] = defaultdict(lambda: (0, 0))

    def hit(self, key: str, per_minute: int) -> int | None:
        """Count a request; return seconds to wait if over the limit, else None."""
        minute = int(time.time() // 60)
        window, count = self._windows[key]
        if window != minute:
            window, count = minute, 0
        count += 1
        self._windows[key] = (window, count)
        if count > per_minute:
            return 60 - int(time.time() % 60)
        return None


class RateLimited(WanggeError):
    """Too many requests for this key (429)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"rate limit exceeded; retry in {retry_after} s")
        self.retry_after = retry_after


def _bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header (OAuth2 password flow), if any."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


async def resolve_principal(request: Request) -> Principal:
    """The caller: from a bearer JWT, an ``X-API-Key`` header, or an ``api_key`` query or form
    value (Open311 clients send it in the form). Counts the request against the key's rate."""
    settings: AuthSettings = request.app.state.auth_settings
    token = _bearer_token(request)
    if token:
        return principal_from_token(token, settings)
    basic = basic_credentials(request)
    if basic is not None:
        return await basic_principal(request, basic[0], basic[1], settings)
    key = request.headers.get("x-api-key") or request.query_params.get("api_key")
    content_type = request.headers.get("content-type", "")
    if not key and request.method == "POST" and (
        content_type.startswith("application/x-www-form-urlencoded")
        or content_type.startswith("multipart/form-data")
    ):
        try:
            await request.body()  # kept, so that a handler reading the raw body still can
        except RuntimeError:  # FastAPI already parsed this route's Form fields (cached)
            pass
        form_key = (await request.form()).get("api_key")
        key = form_key if isinstance(form_key, str) else None
    elif not key and request.method == "POST" and content_type.startswith(
            "application/json") and request.url.path.startswith("/open311/"):
        key = await _json_api_key(request)  # Open311 clients may post a JSON object
    if key:
        principal, per_minute = await verified_key(request, key, settings)
        wait = request.app.state.rate_limiter.hit(principal.name, per_minute)
        if wait is not None:
            raise RateLimited(wait)
        return principal
    return ANONYMOUS


async def _json_api_key(request: Request) -> str | None:
    """The ``api_key`` of a JSON object body, if any (the body stays readable)."""
    try:
        body = json.loads(await request.body() or b"{}")
    except (ValueError, RecursionError):
        return None  # the handler answers the unreadable body
    key = body.get("api_key") if isinstance(body, dict) else None
    return key if isinstance(key, str) else None


async def current_principal(request: Request) -> Principal:
    """Dependency: the caller the access policy already resolved (``request.state.principal``),
    or resolved now when the policy is off."""
    principal = getattr(request.state, "principal", None)
    return principal if principal is not None else await resolve_principal(request)


async def verified_key(request: Request, key: str,
                       settings: AuthSettings) -> tuple[Principal, int]:
    """Resolve an API key, remembering verified keys for ``api_key_cache_seconds`` so that the
    hot path does not query the database on every request (a revoked key dies within that).
    A miss queries the database in a worker thread, off the event loop."""
    cache: dict[str, tuple[float, Principal, int]] = request.app.state.api_key_cache
    now = time.monotonic()
    hit = cache.get(key)
    if hit and hit[0] > now:
        return hit[1], hit[2]
    principal, per_minute = await anyio.to_thread.run_sync(
        _principal_from_api_key, request.app.state.engine, key)
    if len(cache) > 10_000:
        cache.clear()
    cache[key] = (now + settings.api_key_cache_seconds, principal, per_minute)
    return principal, per_minute


def _principal_from_api_key(engine: Engine, key: str) -> tuple[Principal, int]:
    with engine.connect() as conn:
        principal, per_minute = principal_from_api_key(conn, key)
        return with_key_role(conn, principal), per_minute


def with_key_role(conn: Connection, principal: Principal) -> Principal:
    """A key that carries a role (migration 0012) acts as a user of that role, area and
    department, named ``key:NAME``; a key without one keeps its scopes only."""
    row = conn.execute(text(
        "SELECT role, area_code, department_id FROM api_key WHERE name = :n"),
        {"n": principal.name}).first()
    if row is None or row.role is None:
        return principal
    return Principal("user", f"key:{principal.name}", row.role, row.area_code,
                     row.department_id, principal.scopes)


def basic_credentials(request: Request) -> tuple[str, str] | None:
    """(username, password) of an ``Authorization: Basic`` header (RFC 7617), if any."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode(
            "utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise Unauthenticated("malformed HTTP Basic credentials") from exc
    if not sep:
        raise Unauthenticated("malformed HTTP Basic credentials")
    return user, password


async def basic_principal(request: Request, username: str, password: str,
                          settings: AuthSettings) -> Principal:
    """HTTP Basic, as GIS clients send it: an API key as the password (any username), or a
    username and password. A verified pair is remembered (hashed) for
    ``api_key_cache_seconds``, so that a client sending it on every tile is not argon2-checked
    each time."""
    if password.startswith("wg_"):
        principal, per_minute = await verified_key(request, password, settings)
        wait = request.app.state.rate_limiter.hit(principal.name, per_minute)
        if wait is not None:
            raise RateLimited(wait)
        return principal
    cache: dict[str, tuple[float, Principal, int]] = request.app.state.api_key_cache
    digest = "basic:" + hashlib.sha256(f"{username}\0{password}".encode()).hexdigest()
    now = time.monotonic()
    hit = cache.get(digest)
    if hit and hit[0] > now:
        return hit[1]
    principal = await anyio.to_thread.run_sync(
        _authenticate, request.app.state.engine, username, password)
    if len(cache) > 10_000:
        cache.clear()
    cache[digest] = (now + settings.api_key_cache_seconds, principal, 0)
    return principal


def _authenticate(engine: Engine, username: str, password: str) -> Principal:
    with engine.connect() as conn:
        return authenticate(conn, username, password)


def require(*roles: str, scope: str | None = None) -> Callable[..., Principal]:
    """A dependency admitting users with one of ``roles`` (admin always) or API keys with
    ``scope``. Anonymous callers get 401; others outside the rule get 403."""

    def dependency(principal: Principal = Depends(current_principal)) -> Principal:  # noqa: B008
        if principal.kind == "anonymous":
            raise Unauthenticated("authentication required: a bearer token or an API key")
        if principal.kind == "api_key":
            if scope and scope in principal.scopes:
                return principal
            raise Forbidden(f"this API key lacks the '{scope}' scope")
        if principal.role == "admin" or principal.role in roles:
            return principal
        raise Forbidden(f"role '{principal.role}' may not do this")

    return dependency


def install_security(app: FastAPI, max_body_bytes: int, auth_settings: AuthSettings) -> None:
    """Middleware, the rate limiter, the 429 handler and log redaction, in one call."""
    app.state.auth_settings = auth_settings
    app.state.rate_limiter = RateLimiter()
    app.state.api_key_cache = {}
    app.add_middleware(RequestContextMiddleware, max_body_bytes=max_body_bytes)

    @app.exception_handler(RateLimited)
    async def _rate_limited(request: Request, exc: RateLimited) -> Any:
        return JSONResponse({"error": "RateLimited", "detail": exc.message},
                            status_code=429, headers={"Retry-After": str(exc.retry_after)})

    install_log_filter()
