"""The audit trail: who changed what and when, in the ``audit_log`` table (migration 0014).

Recorded in the caller's transaction (a refused change leaves no entry): routing-table and SLA
edits, user and API-key changes, 督办 (urges). Planning changes are audited by their
``generation.author`` and ``planning_change.actor``. ``detail`` never holds secrets (no
passwords, hashes or keys). Times are ``timestamptz`` (shown in China Standard Time).
"""

from __future__ import annotations

import getpass
import json
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection


def default_actor(actor: str | None) -> str:
    """``actor``, or ``local:OSUSER`` when no signed-in caller is known (the CLI, or the API
    with access enforcement off)."""
    if actor:
        return actor
    try:
        return f"local:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid
        return "local:unknown"


def record(conn: Connection, actor: str | None, action: str, *, target: str | None = None,
           detail: dict[str, Any] | None = None) -> None:
    """Append one entry (``actor`` None: see ``default_actor``)."""
    conn.execute(text(
        "INSERT INTO audit_log (actor, action, target, detail) "
        "VALUES (:a, :x, :t, CAST(:d AS jsonb))"),
        {"a": default_actor(actor), "x": action, "t": target,
         "d": json.dumps(detail or {}, default=str, ensure_ascii=False)})


def entries(conn: Connection, *, action: str | None = None,
            limit: int = 200) -> list[dict[str, Any]]:
    """Newest first: id, at, actor, action, target, detail (optionally of one ``action``)."""
    return [dict(r) for r in conn.execute(text(
        "SELECT id, at, actor, action, target, detail FROM audit_log "
        "WHERE CAST(:x AS text) IS NULL OR action = :x ORDER BY id DESC LIMIT :n"),
        {"x": action, "n": limit}).mappings()]
