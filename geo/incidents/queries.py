"""Reading cases: one case, filtered lists, overdue cases and statistics per area or department.

Only public fields (no personal data of the reporter); SLA colours green/amber/red at ``now``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.auth.service import EVERYTHING, Scope
from geo.core.errors import (
    InvalidInput,
    NotFound,
    Problem,
)
from geo.incidents import rollup as daily
from geo.incidents.cases import (
    in_scope,
    scope_where,
)

_PUBLIC_COLS = """
    i.id, i.category_code, c.name_zh AS category_name_zh, c.name_en AS category_name_en,
    i.description, i.address, ST_X(i.location) AS lon, ST_Y(i.location) AS lat,
    i.district_code, i.street_code, i.community_code, i.grid_code, i.boundary_distance_m,
    i.near_boundary, i.status, i.duplicate_of, i.department_ids, i.escalation_level, i.source,
    i.rating, i.reopen_count, i.urge_count, i.reported_at, i.updated_at, i.checkin_due,
    i.amber_at, i.resolve_due, i.checked_in_at, i.consulting_at, i.in_progress_at,
    i.feedback_at, i.rated_at, i.closed_at, i.media_url,
    CASE WHEN NOT i.is_open THEN 'none'
         WHEN :now >= i.resolve_due THEN 'red'
         WHEN :now >= i.amber_at THEN 'amber' ELSE 'green' END AS sla,
    (SELECT array_agg(d.code ORDER BY d.code) FROM department d
      WHERE d.id = ANY(i.department_ids)) AS departments
"""


def get(conn: Connection, incident_id: int, *, history: bool = True,
        now: datetime | None = None, scope: Scope = EVERYTHING) -> dict[str, Any]:
    """One case (no personal data of the reporter) with its history and photo list; refused
    (403, or 404 for a reporter's scope) when outside ``scope``."""
    if not scope.everything:
        in_scope(conn, incident_id, scope)
    row = conn.execute(
        text(f"SELECT {_PUBLIC_COLS} FROM incident i JOIN incident_category c"
             " ON c.code = i.category_code WHERE i.id = :i"),
        {"i": incident_id, "now": now or datetime.now(UTC)},
    ).mappings().first()
    if row is None:
        raise NotFound(f"incident {incident_id} does not exist")
    out = dict(row)
    if history:
        out["history"] = [dict(r) for r in conn.execute(
            text("SELECT id, action, from_status, to_status, actor, note, detail, at"
                 " FROM incident_history WHERE incident_id = :i ORDER BY id"),
            {"i": incident_id}).mappings()]
        out["photos"] = [dict(r) for r in conn.execute(
            text("SELECT id, history_id, content_type, size_bytes, created_at"
                 " FROM incident_photo WHERE incident_id = :i ORDER BY id"),
            {"i": incident_id}).mappings()]
    return out


def _place_time_where(where: list[str], params: dict[str, Any], *, street: str | None = None,
                      grid: str | None = None, start: datetime | None = None,
                      end: datetime | None = None) -> None:
    """Append the street / grid / reported-between conditions that are given, binding values."""
    for value, name, sql in ((street, "street", "i.street_code = :street"),
                             (grid, "grid", "i.grid_code = :grid"),
                             (start, "start", "i.reported_at >= :start"),
                             (end, "end", "i.reported_at <= :end")):
        if value:
            where.append(sql)
            params[name] = value


def _list_where(params: dict[str, Any], *, status: Iterable[str] | None = None,
                category: Iterable[str] | None = None, street: str | None = None,
                grid: str | None = None, ids: Iterable[int] | None = None,
                start: datetime | None = None, end: datetime | None = None,
                near: tuple[float, float, float] | None = None,
                scope: Scope = EVERYTHING) -> str:
    """The WHERE clause of a case list (values bound into ``params``)."""
    where = ["true", *scope_where(scope, params)]
    if status:
        where.append("i.status = ANY(:status)")
        params["status"] = list(status)
    if category:
        where.append("i.category_code = ANY(:cat)")
        params["cat"] = list(category)
    _place_time_where(where, params, street=street, grid=grid, start=start, end=end)
    if ids is not None:
        where.append("i.id = ANY(:ids)")
        params["ids"] = list(ids)
    if near is not None:
        where.append("ST_DWithin(i.location::geography,"
                     " ST_SetSRID(ST_MakePoint(:near_lon, :near_lat), 4326)::geography, :near_r)")
        params["near_lon"], params["near_lat"], params["near_r"] = near
    return " AND ".join(where)


def list_incidents(
    conn: Connection, *, status: Iterable[str] | None = None, category: Iterable[str] | None
    = None, street: str | None = None, grid: str | None = None, ids: Iterable[int] | None = None,
    start: datetime | None = None, end: datetime | None = None, limit: int = 1000,
    offset: int = 0, near: tuple[float, float, float] | None = None,
    now: datetime | None = None, scope: Scope = EVERYTHING,
) -> list[dict[str, Any]]:
    """Cases matching the filters and within ``scope``, newest first (public fields only).
    ``near`` is (lon, lat, radius in metres on the spheroid), lon/lat in EPSG:4326; ``offset``
    cases are skipped (paging)."""
    params: dict[str, Any] = {"now": now or datetime.now(UTC), "lim": min(int(limit), 10_000),
                              "off": max(int(offset), 0)}
    where = _list_where(params, status=status, category=category, street=street, grid=grid,
                        ids=ids, start=start, end=end, near=near, scope=scope)
    sql = (f"SELECT {_PUBLIC_COLS} FROM incident i JOIN incident_category c"
           f" ON c.code = i.category_code WHERE {where}"
           " ORDER BY i.reported_at DESC, i.id DESC LIMIT :lim OFFSET :off")
    return [dict(r) for r in conn.execute(text(sql), params).mappings()]


def count_incidents(conn: Connection, **filters: Any) -> int:
    """How many cases ``list_incidents`` would list with these filters and no limit."""
    params: dict[str, Any] = {}
    where = _list_where(params, **filters)
    return int(conn.execute(text(f"SELECT count(*) FROM incident i WHERE {where}"),
                            params).scalar_one())


def _overdue_where(params: dict[str, Any], *, street: str | None = None,
                   grid: str | None = None, department: str | None = None, level: str = "red",
                   scope: Scope = EVERYTHING) -> str:
    if level not in ("red", "amber"):
        raise InvalidInput("level is red or amber", [Problem(reason="unknown", field="level")])
    col = "resolve_due" if level == "red" else "amber_at"
    where = ["i.is_open", f"i.{col} <= :now", *scope_where(scope, params)]
    _place_time_where(where, params, street=street, grid=grid)
    if department:
        where.append("i.department_ids @> ARRAY[(SELECT id FROM department WHERE code = :dep)]")
        params["dep"] = department
    return " AND ".join(where)


def overdue(conn: Connection, *, street: str | None = None, grid: str | None = None,
            department: str | None = None, level: str = "red", now: datetime | None = None,
            limit: int = 1000, offset: int = 0,
            scope: Scope = EVERYTHING) -> list[dict[str, Any]]:
    """Open cases past their resolution deadline (``level='red'``) or past 80 % (``'amber'``),
    for one street, grid or department, within ``scope``; earliest due first, ``offset``
    skipped (paging). Uses the partial open-case index."""
    params: dict[str, Any] = {"now": now or datetime.now(UTC), "lim": int(limit),
                              "off": max(int(offset), 0)}
    where = _overdue_where(params, street=street, grid=grid, department=department,
                           level=level, scope=scope)
    sql = (f"SELECT i.id, i.category_code, i.status, i.street_code, i.grid_code,"
           f" i.department_ids, i.reported_at, i.resolve_due, i.amber_at, i.escalation_level,"
           f" i.urge_count, ST_X(i.location) AS lon, ST_Y(i.location) AS lat,"
           f" CASE WHEN :now >= i.resolve_due THEN 'red' ELSE 'amber' END AS sla"
           f" FROM incident i WHERE {where} ORDER BY i.resolve_due, i.id"
           f" LIMIT :lim OFFSET :off")
    return [dict(r) for r in conn.execute(text(sql), params).mappings()]


def count_overdue(conn: Connection, *, now: datetime | None = None, **filters: Any) -> int:
    """How many cases ``overdue`` would list with these filters and no limit."""
    params: dict[str, Any] = {"now": now or datetime.now(UTC)}
    where = _overdue_where(params, **filters)
    return int(conn.execute(text(f"SELECT count(*) FROM incident i WHERE {where}"),
                            params).scalar_one())


# ---------------------------------------------------------------- statistics

_STEP_MEDIANS = """
    count(*) AS incidents,
    count(*) FILTER (WHERE i.is_open) AS open,
    count(*) FILTER (WHERE i.status = 'closed') AS closed,
    count(*) FILTER (WHERE i.status = 'duplicate') AS duplicates,
    count(*) FILTER (WHERE i.is_open AND i.resolve_due <= :now) AS overdue,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY date_part('epoch', i.checked_in_at - i.reported_at)
        / 3600) AS median_checkin_h,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY date_part('epoch', i.consulting_at -
        i.checked_in_at) / 3600) AS median_consult_h,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY date_part('epoch', i.in_progress_at -
        i.consulting_at) / 3600) AS median_carry_out_h,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY date_part('epoch', i.feedback_at -
        i.in_progress_at) / 3600) AS median_feedback_h,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY date_part('epoch', i.rated_at - i.feedback_at)
        / 3600) AS median_rating_h,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY date_part('epoch', i.closed_at - i.reported_at)
        / 3600) FILTER (WHERE i.status = 'closed') AS median_total_h,
    avg(i.rating)::float AS satisfaction_mean,
    (count(*) FILTER (WHERE i.rating >= 4))::float / nullif(count(i.rating), 0)
        AS satisfied_share
"""
LEVEL_COLUMN = {"grid": "grid_code", "community": "community_code", "street": "street_code",
                "district": "district_code", "city": "left(i.district_code, 4)"}


def stats(conn: Connection, *, by: str = "grid", street: str | None = None,
          start: datetime | None = None, end: datetime | None = None,
          now: datetime | None = None, scope: Scope = EVERYTHING,
          rollup: bool = True) -> list[dict[str, Any]]:
    """Counts, median hours per step and satisfaction per grid/community/street/department,
    for cases reported in [start, end] (optionally within one street) and within ``scope``.
    By area the whole days come from the daily roll-up (geo.incidents.rollup: the same
    numbers); ``rollup=False`` reads only ``incident`` (the reference the tests compare)."""
    if by not in (*LEVEL_COLUMN, "department"):
        raise InvalidInput("by is grid, community, street, district, city or department",
                           [Problem(reason=f"unknown '{by}'", field="by")])
    if rollup and daily.usable(by, scope):
        col = LEVEL_COLUMN[by]
        rows = daily.stats(conn, by=by, raw_key=col if "(" in col else f"i.{col}",
                           street=street, start=start, end=end, now=now or datetime.now(UTC),
                           scope=scope)
        for r in rows:
            r["code"] = r.pop("key")
        return rows
    params: dict[str, Any] = {"now": now or datetime.now(UTC)}
    where = ["true", *scope_where(scope, params)]
    _place_time_where(where, params, street=street, start=start, end=end)
    if by == "department":
        src = "incident i CROSS JOIN LATERAL unnest(i.department_ids) AS dep(id)"
        key = "dep.id"
    else:
        col = LEVEL_COLUMN[by]
        src, key = "incident i", col if "(" in col else f"i.{col}"
    sql = (f"SELECT {key} AS key, {_STEP_MEDIANS} FROM {src} WHERE {' AND '.join(where)}"
           f" GROUP BY {key} ORDER BY {key}")
    rows = [dict(r) for r in conn.execute(text(sql), params).mappings()]
    if by == "department":
        names = {r.id: (r.code, r.name) for r in conn.execute(
            text("SELECT id, code, name FROM department"))}
        for r in rows:
            r["code"], r["name"] = names.get(r.pop("key"), (None, None))
    else:
        for r in rows:
            r["code"] = r.pop("key")
    return rows


def stats_geojson(conn: Connection, *, by: str = "grid", **kw: Any) -> dict[str, Any]:
    """``stats`` as an RFC 7946 FeatureCollection joined to the current area geometry
    (departments have no area: geometry null)."""
    rows = stats(conn, by=by, **kw)
    geoms: dict[str, tuple[str, dict[str, Any]]] = {}
    if by != "department" and rows:
        for area in conn.execute(
            text("SELECT code, name, ST_AsGeoJSON(geom, 7) AS g FROM area_current"
                 " WHERE level = :l AND code = ANY(:codes)"),
            {"l": by, "codes": [r["code"] for r in rows if r["code"]]},
        ):
            geoms[area.code] = (area.name, json.loads(area.g))
    feats = []
    for r in rows:
        name, geom = geoms.get(r["code"], (r.get("name"), None))
        props = {k: v for k, v in r.items()}
        props["name"] = name
        feats.append({"type": "Feature", "id": r["code"], "geometry": geom,
                      "properties": props})
    return {"type": "FeatureCollection", "features": feats}
