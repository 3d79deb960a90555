"""What the console's views read at a glance: SLA counts per area or department, daily trends,
the compact incident points of the command map, a grid's 2+5+N team and what is due today.

SLA states as everywhere: an open case is red past ``resolve_due``, amber past ``amber_at``,
else green; closed and duplicate cases have none. Days are calendar days in China Standard
Time (Asia/Shanghai). Coordinates are WGS 84 lon/lat degrees (EPSG:4326).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.auth.service import EVERYTHING, Scope, code_prefix_sql
from geo.core.errors import InvalidInput, NotFound, Problem
from geo.incidents.cases import scope_where

TZ = "Asia/Shanghai"
LEVELS = {"city": "left(i.district_code, 4)", "district": "i.district_code",
          "street": "i.street_code", "community": "i.community_code", "grid": "i.grid_code"}
# 2+5+N (DESIGN.md): one leader, one responsible cadre, the five officers, N >= 1 workers.
OFFICERS = ("community_police", "urban_management", "market_supervisor", "judicial_mediator",
            "community_medic")
_SLA = """CASE WHEN NOT i.is_open THEN 'none' WHEN :now >= i.resolve_due THEN 'red'
               WHEN :now >= i.amber_at THEN 'amber' ELSE 'green' END"""


def _where(scope: Scope, params: dict[str, Any], within: str | None) -> list[str]:
    """Conditions on alias ``i`` for ``scope`` (the incident reads' own rules,
    ``geo.incidents.cases.scope_where``) and the area ``within``; values bound into ``params``."""
    where = ["true", *scope_where(scope, params)]
    if within:
        where.append(code_prefix_sql("i.grid_code", within, params, "within"))
    return where


def counts(conn: Connection, *, by: str = "street", scope: Scope = EVERYTHING,
           within: str | None = None, closed_days: int = 30,
           now: datetime | None = None) -> list[dict[str, Any]]:
    """Per city / district / street / community / grid / department: open cases by SLA state
    (green, amber, red) and cases closed in the last ``closed_days`` days, with the area's or
    department's name."""
    if by not in (*LEVELS, "department"):
        raise InvalidInput("by is city, district, street, community, grid or department",
                           [Problem(reason=f"unknown '{by}'", field="by")])
    now = now or datetime.now(UTC)
    params: dict[str, Any] = {"now": now, "since": now - timedelta(days=closed_days)}
    where = " AND ".join(_where(scope, params, within))
    if by == "department":
        src, key = "incident i CROSS JOIN LATERAL unnest(i.department_ids) AS dep(id)", "dep.id"
    else:
        src, key = "incident i", LEVELS[by]
    # Two index-served halves: the open cases (partial indexes) and the recently changed ones.
    sql = f"""
        WITH c AS (
            SELECT {key} AS key, {_SLA} AS sla, i.status FROM {src}
             WHERE i.is_open AND {where}
            UNION ALL
            SELECT {key}, 'none', i.status FROM {src}
             WHERE i.status = 'closed' AND i.updated_at >= :since AND {where})
        SELECT key, count(*) FILTER (WHERE sla <> 'none') AS open,
               count(*) FILTER (WHERE sla = 'green') AS green,
               count(*) FILTER (WHERE sla = 'amber') AS amber,
               count(*) FILTER (WHERE sla = 'red') AS red,
               count(*) FILTER (WHERE status = 'closed') AS closed
          FROM c GROUP BY key ORDER BY key"""
    rows = [dict(r) for r in conn.execute(text(sql), params).mappings()]
    if by == "department":
        names = {r.id: (r.code, r.name) for r in conn.execute(
            text("SELECT id, code, name FROM department"))}
        for r in rows:
            r["code"], r["name"] = names.get(r.pop("key"), (None, None))
    else:
        codes = [r["key"] for r in rows if r["key"]]
        names = dict(conn.execute(
            text("SELECT code, name FROM area_current WHERE level = :l AND code = ANY(:c)"),
            {"l": by, "c": codes}).all()) if codes else {}
        for r in rows:
            r["code"] = r.pop("key")
            r["name"] = names.get(r["code"])
    return rows


def trend(conn: Connection, *, days: int = 30, scope: Scope = EVERYTHING,
          within: str | None = None, now: datetime | None = None) -> list[dict[str, Any]]:
    """Cases reported and closed per calendar day (China Standard Time) over the last ``days``
    days, oldest first; days without any are included as zeros."""
    if not 1 <= days <= 366:
        raise InvalidInput("days is 1 to 366", [Problem(reason="out of range", field="days")])
    now = now or datetime.now(UTC)
    params: dict[str, Any] = {"now": now, "days": days, "tz": TZ}
    where = " AND ".join(_where(scope, params, within))
    sql = f"""
        WITH span AS (SELECT generate_series(
                 (timezone(:tz, CAST(:now AS timestamptz)))::date - (:days - 1),
                 (timezone(:tz, CAST(:now AS timestamptz)))::date, interval '1 day')::date AS day),
             rep AS (SELECT (timezone(:tz, i.reported_at))::date AS day, count(*) AS n
                       FROM incident i WHERE i.reported_at >= CAST(:now AS timestamptz)
                            - make_interval(days => :days + 1) AND {where} GROUP BY 1),
             clo AS (SELECT (timezone(:tz, i.closed_at))::date AS day, count(*) AS n
                       FROM incident i WHERE i.status = 'closed' AND i.updated_at >=
                            CAST(:now AS timestamptz) - make_interval(days => :days + 1)
                            AND {where} GROUP BY 1)
        SELECT span.day, coalesce(rep.n, 0) AS reported, coalesce(clo.n, 0) AS closed
          FROM span LEFT JOIN rep USING (day) LEFT JOIN clo USING (day) ORDER BY span.day"""
    return [{"day": r.day.isoformat(), "reported": r.reported, "closed": r.closed}
            for r in conn.execute(text(sql), params)]


# the start of the oldest transaction of this database that has written something (an xid)
OLDEST_WRITE_SQL = """
SELECT min(xact_start) FROM pg_stat_activity
WHERE datname = current_database() AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()
"""


def map_points(conn: Connection, *, scope: Scope = EVERYTHING, within: str | None = None,
               since: datetime | None = None, closed_days: int = 7, limit: int = 50_000,
               now: datetime | None = None, overlap_s: float = 0.0) -> dict[str, Any]:
    """The command map's incidents, compact: ``rows`` of [id, lon, lat, sla, status, category,
    grid_code] (lon/lat WGS 84, 6 decimals). Without ``since``: every open case and those
    closed in the last ``closed_days`` days; with it: only cases changed after ``since`` (the
    refresh). ``now``: the instant the answer is complete up to (the server's clock, or a
    standby's replay horizon); ``next_since``: what the next refresh passes as ``since``. A
    case's ``updated_at`` is stamped inside its transaction, so one that commits after this
    answer can carry an earlier stamp: ``next_since`` is the earlier of ``now`` and the start
    of the oldest write transaction still open here (none is visible on a standby), less
    ``overlap_s`` (``IncidentSettings.map_refresh_overlap_s``: replay, clocks), and never
    before ``since``."""
    now = now or datetime.now(UTC)
    oldest = conn.execute(text(OLDEST_WRITE_SQL)).scalar()
    cursor = (min(now, oldest) if oldest is not None else now) - timedelta(seconds=overlap_s)
    if since is not None:
        cursor = max(cursor, since)
    params: dict[str, Any] = {"now": now, "lim": int(limit)}
    where = " AND ".join(_where(scope, params, within))
    cols = (f"i.id, round(ST_X(i.location)::numeric, 6)::float AS lon,"
            f" round(ST_Y(i.location)::numeric, 6)::float AS lat, {_SLA} AS sla, i.status,"
            f" i.category_code, i.grid_code")
    if since is not None:
        params["since"] = since
        sql = f"SELECT {cols} FROM incident i WHERE i.updated_at > :since AND {where}"
    else:
        params["since"] = now - timedelta(days=closed_days)
        sql = (f"SELECT {cols} FROM incident i WHERE i.is_open AND {where} UNION ALL"
               f" SELECT {cols} FROM incident i WHERE NOT i.is_open AND i.status = 'closed'"
               f" AND i.updated_at >= :since AND {where}")
    rows = conn.execute(text(f"{sql} LIMIT :lim"), params).all()
    return {"now": now.isoformat(),
            "next_since": cursor.isoformat(),
            "columns": ["id", "lon", "lat", "sla", "status",
                                                 "category", "grid_code"],
            "rows": [list(r) for r in rows], "truncated": len(rows) >= limit}


def grid_team(conn: Connection, grid_code: str) -> dict[str, Any]:
    """A grid's name, community and 2+5+N team, with the gaps against the rule (each gap a role
    code and what is missing: e.g. no leader, an officer role unfilled, no grid worker)."""
    grid = conn.execute(
        text("SELECT g.code, g.name, g.parent_code, c.name AS community_name FROM area_current g"
             " LEFT JOIN area_current c ON c.code = g.parent_code AND c.level = 'community'"
             " WHERE g.level = 'grid' AND g.code = :c"), {"c": grid_code}).first()
    if grid is None:
        raise NotFound(f"grid {grid_code} does not exist")
    members = [dict(r) for r in conn.execute(
        text("SELECT role, name, phone FROM grid_team_member WHERE grid_code = :c"
             " ORDER BY role, name"), {"c": grid_code}).mappings()]
    have: dict[str, int] = {}
    for m in members:
        have[m["role"]] = have.get(m["role"], 0) + 1
    gaps = []
    for role in ("grid_leader", "responsible_cadre"):
        if have.get(role, 0) != 1:
            gaps.append({"role": role, "have": have.get(role, 0), "want": 1})
    gaps += [{"role": r, "have": 0, "want": 1} for r in OFFICERS if not have.get(r)]
    workers = have.get("grid_worker", 0) + have.get("volunteer", 0)
    if workers < 1:
        gaps.append({"role": "grid_worker", "have": 0, "want": 1})
    return {"code": grid.code, "name": grid.name, "community_code": grid.parent_code,
            "community_name": grid.community_name, "members": members, "gaps": gaps,
            "complete": not gaps}


def station_kinds(conn: Connection) -> list[dict[str, Any]]:
    """Station kinds with their Chinese and English names."""
    return [dict(r) for r in conn.execute(
        text("SELECT code, name_zh, name_en FROM station_kind ORDER BY code")).mappings()]


def area_names(conn: Connection, codes: list[str]) -> dict[str, str]:
    """Names of current areas by code (unknown codes left out)."""
    if not codes:
        return {}
    return dict(conn.execute(text("SELECT code, name FROM area_current WHERE code = ANY(:c)"),
                             {"c": list(codes)[:100_000]}).all())
