"""Read-your-writes with a hot standby: who wrote a moment ago reads the primary.

``READ_CONNECTION`` (api/dependencies.py) reads from the standby, which replays the primary's
WAL a little behind it. A caller that has just changed something expects to see its change on
its next request (an OGC client reads the grid it just replaced; a console re-reads what it
just saved). ``ReadYourWrites``, a pure ASGI layer, notes each write request (POST, PUT, PATCH,
DELETE) by its caller, and for ``ScaleSettings.read_after_write_s`` seconds after it that
caller's read-only requests in this process take the primary instead (as Rails'
``DatabaseSelector`` does). A caller is its credential (``Authorization``, ``X-API-Key``, the
session cookie), else its address (``X-Forwarded-For`` first, as HAProxy sends it). Nothing is
noted while the app has no standby (``read_engine is engine``).

Across several workers this holds only for the worker that took the write; a strict guarantee
for every worker is synchronous replication with ``synchronous_commit = remote_apply``
(``wangge db start --standby --sync --apply``; docs/operations/scale.md).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from geo.scale.settings import ScaleSettings

READS = frozenset({"GET", "HEAD", "OPTIONS"})
READ_POSTS = frozenset({"/v1/lookup/batch"})  # a POST that writes nothing
MAX_CALLERS = 10_000  # callers remembered; expired ones are dropped when there are more


def caller_key(scope: Scope) -> str:
    """Who sends this request: a hash of its credential, else its (forwarded) address."""
    cred = b""
    forwarded = b""
    for name, value in scope.get("headers") or ():
        if name in (b"authorization", b"x-api-key"):
            cred += value
        elif name == b"cookie" and b"wangge_session=" in value:
            cred += value.split(b"wangge_session=", 1)[1].split(b";", 1)[0]
        elif name == b"x-forwarded-for":
            forwarded = value.split(b",", 1)[0].strip()
    if cred:
        return "c:" + hashlib.blake2b(cred, digest_size=12).hexdigest()
    if forwarded:
        return "a:" + forwarded.decode("latin-1")
    client = scope.get("client")
    return "a:" + (client[0] if client else "-")


def _has_standby(state: Any) -> bool:
    read = getattr(state, "read_engine", None)
    return read is not None and read is not getattr(state, "engine", None)


def wrote_recently(scope: Scope) -> bool:
    """Did this request's caller write through this process within the read-after-write
    window (so that its reads must go to the primary)?"""
    state = scope["app"].state
    writes: dict[str, float] | None = getattr(state, "recent_writes", None)
    if not writes:
        return False
    until = writes.get(caller_key(scope))
    return until is not None and until > time.monotonic()


class ReadYourWrites:
    """Pure ASGI: note a write request's caller, from its start until ``window`` seconds after
    its end."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.window = ScaleSettings().read_after_write_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in READS or self.window <= 0 \
                or scope["path"] in READ_POSTS:
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        if not _has_standby(state):
            await self.app(scope, receive, send)
            return
        key = caller_key(scope)
        _note(state, key, float("inf"))  # from before the answer can reach the caller
        try:
            await self.app(scope, receive, send)
        finally:
            _note(state, key, self.window)


def _note(state: Any, key: str, window: float) -> None:
    writes: dict[str, float] | None = getattr(state, "recent_writes", None)
    if writes is None:
        writes = state.recent_writes = {}
    now = time.monotonic()
    if len(writes) >= MAX_CALLERS:
        for k in [k for k, until in writes.items() if until <= now]:
            del writes[k]
    writes[key] = now + window
