"""The city's command level: 市委督单 (the city supervising cases of any district) and roll-ups.

Command levels follow the area codes a caller is scoped to (GB/T 2260 prefixes): province 2
digits, city 4, district 6, street 9, community 12, grid 15; no area at all is the whole
service. Only a city-level (or wider) command centre supervises (督单); a district's commander
urges (督办, ``workflow.urge``) within the district. Times are timestamptz (UTC in Python).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.auth.service import EVERYTHING, Scope
from geo.core.codes import level_of
from geo.core.errors import Conflict, Forbidden, Problem
from geo.incidents.cases import add_history, lock_case, scope_where
from geo.incidents.queries import stats

CITY_LEVELS = frozenset({None, "province", "city"})  # scopes that may supervise (督单)


def command_level(scope: Scope) -> str:
    """The command level of ``scope``: 'service' (no area), else the level of its area code."""
    if scope.area is None:
        return "service"
    return level_of(scope.area) or "unknown"


def _require_city(scope: Scope) -> None:
    if scope.area is not None and level_of(scope.area) not in CITY_LEVELS:
        raise Forbidden(
            "only the city command centre supervises cases (市委督单)",
            [Problem(reason=f"your scope {scope.area} is a {level_of(scope.area)}, not a city",
                     field="area")])


def supervise(conn: Connection, incident_id: int, *, actor: str, note: str | None = None,
              now: datetime | None = None, scope: Scope = EVERYTHING) -> dict[str, Any]:
    """市委督单: the city supervises one open case of any of its districts; written to the
    history (action ``supervise``, detail: level city, the case's district, overdue or not)
    and counted as an urge."""
    _require_city(scope)
    case = lock_case(conn, incident_id, scope)
    if case.status in ("closed", "duplicate"):
        raise Conflict(f"incident {incident_id} is {case.status}: nothing to supervise",
                       [Problem(reason="case not open", field="id")])
    now = now or datetime.now(UTC)
    row = conn.execute(text("SELECT district_code, resolve_due < :n AS overdue FROM incident "
                            "WHERE id = :i"), {"i": incident_id, "n": now}).one()
    detail = {"level": "city", "district": row.district_code, "overdue": bool(row.overdue)}
    entry = add_history(conn, incident_id, "supervise", case.status, case.status, actor,
                        note or "市委督单", detail, now)
    conn.execute(text("UPDATE incident SET urge_count = urge_count + 1, updated_at = :n"
                      " WHERE id = :i"), {"n": now, "i": incident_id})
    return {"history_id": entry, "incident_id": incident_id, "action": "supervise", **detail}


def supervise_overdue(conn: Connection, *, actor: str, now: datetime | None = None,
                      scope: Scope = EVERYTHING) -> list[dict[str, Any]]:
    """Supervise (督单) every open case within ``scope`` past its resolution deadline, in
    every district of the city; returns one entry per case."""
    _require_city(scope)
    now = now or datetime.now(UTC)
    params: dict[str, Any] = {"n": now}
    where = " ".join(f"AND {w}" for w in scope_where(scope, params))
    ids = conn.execute(text(
        f"SELECT i.id FROM incident i WHERE i.is_open AND i.resolve_due < :n {where} "
        "ORDER BY i.resolve_due, i.id"), params).scalars().all()
    return [supervise(conn, i, actor=actor, now=now, scope=scope) for i in ids]


def rollup(conn: Connection, *, start: datetime | None = None, end: datetime | None = None,
           now: datetime | None = None, scope: Scope = EVERYTHING) -> dict[str, Any]:
    """Statistics per district and per city (``queries.stats`` by district and by city)."""
    kw: dict[str, Any] = {"start": start, "end": end, "now": now, "scope": scope}
    return {"city": stats(conn, by="city", **kw), "district": stats(conn, by="district", **kw)}
