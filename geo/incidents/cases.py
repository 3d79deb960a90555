"""Shared row helpers: the case row within a scope (read or locked), its history rows,
a category and departments by code."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.auth.service import EVERYTHING, Scope, code_prefix_sql
from geo.core.errors import (
    Forbidden,
    InvalidInput,
    NotFound,
    Problem,
)


def category_row(conn: Connection, code: str) -> Any:
    row = conn.execute(
        text("SELECT code, name_zh, name_en, checkin_workdays, resolve_workdays, active,"
             " ARRAY(SELECT department_id FROM category_department cd"
             "       WHERE cd.category_code = c.code ORDER BY department_id) AS deps"
             " FROM incident_category c WHERE code = :c"),
        {"c": code},
    ).first()
    if row is None or not row.active:
        raise InvalidInput(f"unknown service/category '{code}'",
                           [Problem(reason="no such active category", field="category")])
    return row


def scope_where(scope: Scope, params: dict[str, Any]) -> list[str]:
    """SQL conditions (on alias ``i``) for the rows ``scope`` reaches; binds into ``params``.

    An area is a grid-code range (btree on grid_code), a department the array containment the
    GIN index on ``department_ids`` serves, a reporter the partial index of migration 0007.
    """
    where = []
    if scope.area is not None:
        where.append(code_prefix_sql("i.grid_code", scope.area, params, "scope"))
    if scope.department_id is not None:
        where.append("i.department_ids @> ARRAY[CAST(:scope_dep AS integer)]")
        params["scope_dep"] = scope.department_id
    if scope.reporter_user_id is not None:
        where.append("i.reporter_user_id = :scope_uid")
        params["scope_uid"] = scope.reporter_user_id
    return where


def in_scope(conn: Connection, incident_id: int, scope: Scope, *, lock: bool = False) -> Any:
    """The case row (id, status, rating, ...) if ``scope`` reaches it; else NotFound/Forbidden.

    One query: the row and whether the scope holds it, so a case outside the scope is told
    apart from a missing one (and ``FOR NO KEY UPDATE`` locks it when ``lock``: a report
    filing a twin of it, which checks its key with KEY SHARE, is not held behind the lock; a
    wait there formed a deadlock with the roll-up row of the day, migration 0017).
    """
    params: dict[str, Any] = {"i": incident_id}
    inside = " AND ".join(scope_where(scope, params)) or "true"
    row = conn.execute(
        text("SELECT id, status, rating, escalation_level, department_ids, category_code,"
             f" reported_at, ({inside}) AS in_scope FROM incident i WHERE id = :i"
             + (" FOR NO KEY UPDATE" if lock else "")),
        params,
    ).first()
    if row is None or (not row.in_scope and scope.hides):
        raise NotFound(f"incident {incident_id} does not exist")
    if not row.in_scope:
        raise Forbidden(f"incident {incident_id} lies outside your scope",
                        [Problem(reason="not in your area, department or reports", field="id")])
    return row


def add_history(conn: Connection, incident_id: int, action: str, from_status: str | None,
                to_status: str | None, actor: str, note: str | None,
                detail: dict[str, Any] | None = None, at: datetime | None = None) -> int:
    """Append one history row of a case; its id."""
    return int(conn.execute(
        text("INSERT INTO incident_history (incident_id, incident_reported_at, action,"
             " from_status, to_status, actor, note, detail, at) SELECT i.id, i.reported_at,"
             " :a, :f, :t, :ac, :n, CAST(:d AS jsonb), coalesce(:at, clock_timestamp())"
             " FROM incident i WHERE i.id = :i RETURNING id"),
        {"i": incident_id, "a": action, "f": from_status, "t": to_status, "ac": actor,
         "n": note, "d": json.dumps(detail or {}, default=str), "at": at},
    ).scalar_one())


def lock_case(conn: Connection, incident_id: int, scope: Scope = EVERYTHING) -> Any:
    """Lock the case row for a change; refuse a case outside ``scope``."""
    return in_scope(conn, incident_id, scope, lock=True)


def department_ids(conn: Connection, codes: Iterable[str]) -> list[int]:
    codes = list(codes)
    if not codes:
        raise InvalidInput("no departments given", [Problem(reason="empty",
                                                            field="departments")])
    rows = conn.execute(text("SELECT code, id FROM department WHERE code = ANY(:c)"),
                        {"c": codes}).all()
    known = {r.code: r.id for r in rows}
    missing = [c for c in codes if c not in known]
    if missing:
        raise InvalidInput("unknown departments",
                           [Problem(reason=f"no department '{c}'", field="departments")
                            for c in missing])
    return sorted(known[c] for c in codes)
