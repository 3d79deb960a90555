"""Request plumbing for every route: request ids, body-size limit, log redaction, who is calling.

- Each request gets an ``X-Request-ID`` (the caller's, or a new one); every log line carries it.
- Bodies larger than ``ApiSettings.max_body_bytes`` are refused with 413 before they are read.
- Log messages are scrubbed of phone numbers, passwords, API keys and bearer tokens.
- Who may call what is decided by ``api/policy.py`` (one table).
- Rate limits per API key, per signed-in user and (stricter) per resident answer 429 with
  ``Retry-After``; they are shared by every worker (``geo.auth.limits``).
- A token of a disabled account, or issued before its tokens were revoked, is refused (401).
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import hashlib
import hmac
import json
import logging
import re
import time
import uuid
from typing import Any

import anyio
from fastapi import FastAPI, Request
from sqlalchemy import Engine
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.bodies import JsonGuardMiddleware
from api.dependencies import pooled_connection
from api.errors import answer
from geo.auth.accounts import token_still_valid, user_state
from geo.auth.limits import (
    SharedRateLimiter,
    failed_logins,
    record_failed_login,
    seconds_left,
)
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
        if isinstance(record.args, tuple) and record.args:
            # Scrub each argument and keep the tuple: formatters such as uvicorn's access log
            # unpack ``record.args`` (collapsing it broke every line with ``?api_key=``).
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
            record.msg = redact(str(record.msg))
            return True
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


class RateLimited(WanggeError):
    """Too many requests for this key (429)."""

    def __init__(self, retry_after: int, what: str = "rate limit exceeded") -> None:
        super().__init__(f"{what}; retry in {retry_after} s")
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
        return await _signed_in(request, principal_from_token(token, settings), settings)
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
        _count(request, principal.name, per_minute)
        return principal
    session = session_principal(request, settings)
    return await _signed_in(request, session, settings) if session is not None else ANONYMOUS


async def _signed_in(request: Request, principal: Principal, settings: AuthSettings) -> Principal:
    """A user of a token, sent as a bearer or the console's session cookie alike: refused when
    the account is disabled or its tokens revoked; counted against the user's (or the
    stricter resident's) rate."""
    await _still_valid(request, principal, settings)
    per_minute = (settings.resident_rate_per_minute if principal.role == "resident"
                  else settings.user_rate_per_minute)
    _count(request, f"user:{principal.name}", per_minute)
    return principal


# ---------------------------------------------------------------- the console's session cookie
# The browser console (web/) signs in with ``POST /v1/console/session``: the JWT goes into an
# HttpOnly, SameSite=Strict cookie, and a CSRF token derived from it (HMAC with the JWT secret)
# into a cookie the page's script can read and must echo in ``X-CSRF-Token`` on every
# state-changing request made with the cookie. Another site can neither read the token nor
# (SameSite) send the cookie.
SESSION_COOKIE = "wangge_session"
CSRF_COOKIE = "wangge_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def csrf_token(session: str, settings: AuthSettings) -> str:
    """The CSRF token that goes with the session token ``session``."""
    return hmac.new(settings.jwt_secret.encode(), b"csrf:" + session.encode(),
                    hashlib.sha256).hexdigest()


def session_principal(request: Request, settings: AuthSettings) -> Principal | None:
    """The user of a valid session cookie (None without one, or if expired or forged).
    A state-changing request made with it must carry the matching ``X-CSRF-Token`` (else 403)."""
    session = request.cookies.get(SESSION_COOKIE)
    if not session:
        return None
    try:
        principal = principal_from_token(session, settings)
    except Unauthenticated:
        return None
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), csrf_token(session, settings).encode()):
            raise Forbidden("CSRF token missing or wrong: a request made with the session "
                            "cookie must send the X-CSRF-Token header")
    return principal


def _count(request: Request, key: str, per_minute: int) -> None:
    """Count a request against ``key``'s rate (shared by every worker); 429 when over it."""
    wait = request.app.state.rate_limiter.hit(key, per_minute)
    if wait is not None:
        raise RateLimited(wait)


async def _still_valid(request: Request, principal: Principal, settings: AuthSettings) -> None:
    """Refuse (401) the token of a disabled account or one issued before its tokens were
    revoked. The account's state is remembered for ``user_cache_seconds`` (the hot path asks
    the database at most that often per user); ``forget_credentials`` drops it at once."""
    if principal.user_id is None:
        return
    cache: dict[int, tuple[float, bool, float | None]] = request.app.state.user_cache
    now = time.monotonic()
    hit = cache.get(principal.user_id)
    if hit is None or hit[0] <= now:
        active, after = await anyio.to_thread.run_sync(
            _user_state, request.app.state.engine, principal.user_id)
        if len(cache) > 100_000:
            cache.clear()
        hit = cache[principal.user_id] = (now + settings.user_cache_seconds, active, after)
    if not token_still_valid(principal.issued_at, hit[1], hit[2]):
        raise Unauthenticated("this token was revoked or its account is disabled; sign in again")


def _user_state(engine: Engine, user_id: int) -> tuple[bool, float | None]:
    with engine.connect() as conn:
        return user_state(conn, user_id)


def forget_credentials(app: FastAPI) -> None:
    """Drop every remembered key and account state in this worker (after a revoke/disable)."""
    app.state.user_cache.clear()
    app.state.api_key_cache.clear()


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
    async with pooled_connection(request.app.state) as conn:
        principal, per_minute = await anyio.to_thread.run_sync(principal_from_api_key, conn, key)
    if len(cache) > 10_000:
        cache.clear()
    cache[key] = (now + settings.api_key_cache_seconds, principal, per_minute)
    return principal, per_minute


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
        _count(request, principal.name, per_minute)
        return principal
    cache: dict[str, tuple[float, Principal, int]] = request.app.state.api_key_cache
    digest = "basic:" + hashlib.sha256(f"{username}\0{password}".encode()).hexdigest()
    now = time.monotonic()
    hit = cache.get(digest)
    if hit and hit[0] > now:
        return hit[1]
    principal = await anyio.to_thread.run_sync(
        password_sign_in, request.app.state.engine, username, password,
        client_address(request), settings)
    if len(cache) > 10_000:
        cache.clear()
    cache[digest] = (now + settings.api_key_cache_seconds, principal, 0)
    return principal


def client_address(request: Request) -> str:
    """The client's address, as the failed sign-in throttle counts it."""
    return request.client.host if request.client else "unknown"


def password_sign_in(engine: Engine, username: str, password: str, address: str,
                     settings: AuthSettings) -> Principal:
    """A username and password checked under the failed sign-in throttle (``/v1/auth/token``
    and HTTP Basic alike): 429 while the account or the address has had too many failures in
    ``login_window_seconds`` (``geo.auth.limits``, shared by every worker); a failure is
    counted (committed on its own) and answers 401."""
    window = settings.login_window_seconds
    with engine.connect() as conn:
        by_account, by_address = failed_logins(conn, username, address, window)
        if by_account >= settings.login_failures_per_account \
                or by_address >= settings.login_failures_per_address:
            raise RateLimited(seconds_left(window), "too many failed sign-ins")
        try:
            return authenticate(conn, username, password)
        except Unauthenticated as exc:
            failure = exc
    with engine.begin() as conn:
        record_failed_login(conn, username, address, window)
    raise failure


def install_security(app: FastAPI, max_body_bytes: int, auth_settings: AuthSettings) -> None:
    """Middleware, the rate limiter, the 429 handler and log redaction, in one call."""
    app.state.auth_settings = auth_settings
    app.state.rate_limiter = SharedRateLimiter()  # shared once the lifespan calls start()
    app.state.api_key_cache = {}
    app.state.user_cache = {}
    app.add_middleware(JsonGuardMiddleware)  # inside the body limit: sees at most the limit
    app.add_middleware(RequestContextMiddleware, max_body_bytes=max_body_bytes)

    @app.exception_handler(RateLimited)
    async def _rate_limited(request: Request, exc: RateLimited) -> Any:
        return answer(request, {"error": "RateLimited", "detail": exc.message},
                      status_code=429, headers={"Retry-After": str(exc.retry_after)})

    install_log_filter()
