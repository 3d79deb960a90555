"""The queries behind the maps: GeoDataFrames (EPSG:4326) of the current generation.

Each function returns what one of ``maps.*`` draws. Polygons are simplified for display in
PostGIS (``ST_SimplifyPreserveTopology``, tolerance in metres converted to degrees at the
area's latitude); heavy work (sums per grid, coverage tests) runs in SQL.

The service-circle tables (migration 0003) and the incident workflow columns (0004) may not
exist yet: the functions look at the catalogue and use what is there (plain radius coverage
round stations; incidents without satisfaction), never failing on a missing optional table.
"""

from __future__ import annotations

from typing import Any

import geopandas as gpd
import pandas as pd
from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection

from geo.auth.service import code_prefix_sql
from geo.circles.runs import latest_run
from geo.core.codes import level_of, street_of
from geo.core.errors import InvalidInput, Problem
from geo.data.crs import metres_to_degrees

CLOSED_STATUSES = ("resolved", "closed", "rejected", "cancelled", "archived", "duplicate")
# Steps of the incident loop (0004) in which the case is still being worked on.
WORKING_STATUSES = ("reported", "checked_in", "consulting", "in_progress")


# Latitude (degrees) at which display tolerances in metres are turned into degrees: the
# demo districts lie near 26° N.
MAP_LAT = 26.0


def _deg(metres: float) -> float:
    """A display tolerance in metres as degrees of longitude at ``MAP_LAT``."""
    return metres_to_degrees(metres, MAP_LAT)


def _read(conn: Connection, sql: str, params: dict[str, Any],
          geom: str = "geometry") -> gpd.GeoDataFrame:
    return gpd.read_postgis(text(sql), conn, geom_col=geom, params=params, crs=4326)


def _has_column(conn: Connection, table: str, column: str) -> bool:
    return bool(
        conn.execute(
            text(
                "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()"
                " AND table_name = :t AND column_name = :c"
            ),
            {"t": table, "c": column},
        ).scalar()
    )


def _has_table(conn: Connection, table: str) -> bool:
    return conn.execute(text("SELECT to_regclass(:t)"), {"t": table}).scalar() is not None


def _check_prefix(code: str | None) -> None:
    if code is not None and (not code.isdigit() or level_of(code) is None):
        raise InvalidInput(
            "area code must be 2, 4, 6, 9 or 12 digits (or a 15-digit grid)",
            [Problem(reason="not a province, city, district, street, community or grid code",
                     field="within")],
        )


def grids_for_map(
    conn: Connection,
    *,
    within: str | None = None,
    simplify_m: float = 2.0,
) -> gpd.GeoDataFrame:
    """Current grids: code, parent_code, name, responsible_body, households, buildings, team.

    ``households`` sums the grid's buildings; ``team`` is a list of {role, name, phone}.
    ``within``: a district/street/community code prefix to restrict to. Geometry simplified
    by ``simplify_m`` metres (display only).
    """
    _check_prefix(within)
    sql = """
        WITH g AS (
            SELECT code, parent_code, name, responsible_body, geom FROM area_current
            WHERE level = 'grid' AND (CAST(:within AS text) IS NULL OR code LIKE :within || '%')
        ), hh AS (
            SELECT b.grid_code, sum(b.households)::int AS households, count(*)::int AS buildings
            FROM building_now b JOIN g ON g.code = b.grid_code GROUP BY b.grid_code
        ), team AS (
            SELECT t.grid_code, json_agg(json_build_object('role', t.role, 'name', t.name,
                   'phone', t.phone) ORDER BY t.role, t.id) AS team
            FROM grid_team_member t JOIN g ON g.code = t.grid_code GROUP BY t.grid_code
        )
        SELECT g.code, g.parent_code, g.name, g.responsible_body,
               coalesce(hh.households, 0) AS households, coalesce(hh.buildings, 0) AS buildings,
               coalesce(team.team, '[]'::json) AS team,
               ST_SimplifyPreserveTopology(g.geom, :tol) AS geometry
        FROM g LEFT JOIN hh ON hh.grid_code = g.code LEFT JOIN team ON team.grid_code = g.code
        ORDER BY g.code
    """
    return _read(conn, sql, {"within": within, "tol": _deg(simplify_m)})


def areas_for_map(
    conn: Connection, level: str, *, within: str | None = None, simplify_m: float = 2.0
) -> gpd.GeoDataFrame:
    """Current areas of ``level`` (district|street|community|grid): code, name, geometry."""
    if level not in ("district", "street", "community", "grid"):
        raise InvalidInput("unknown area level", [Problem(reason="unknown level", field="level")])
    _check_prefix(within)
    sql = """
        SELECT code, name, ST_SimplifyPreserveTopology(geom, :tol) AS geometry
        FROM area_current
        WHERE level = :level AND (CAST(:within AS text) IS NULL OR code LIKE :within || '%')
        ORDER BY code
    """
    return _read(conn, sql, {"level": level, "within": within, "tol": _deg(simplify_m)})


def stations_for_map(conn: Connection, *, within: str | None = None) -> gpd.GeoDataFrame:
    """Stations: code, name, kind, community_code, Point."""
    _check_prefix(within)
    sql = """
        SELECT code, name, kind, community_code, location AS geometry FROM station
        WHERE CAST(:within AS text) IS NULL OR community_code LIKE :within || '%'
        ORDER BY code
    """
    return _read(conn, sql, {"within": within})


def uncovered_buildings(
    conn: Connection,
    *,
    radius_m: float = 1000.0,
    kind: str | None = None,
    within: str | None = None,
) -> gpd.GeoDataFrame:
    """Buildings with no station (of ``kind``, if given) within ``radius_m`` metres (geodesic).

    Returns code, households, grid_code, Point. This is the plain radius test used until the
    service-circle engineer's walking-distance coverage tables exist.
    """
    if radius_m <= 0 or radius_m > 20_000:
        raise InvalidInput(
            "radius out of range",
            [Problem(reason="must be in (0, 20000] metres", field="radius_m")],
        )
    _check_prefix(within)
    sql = """
        SELECT b.code, b.households, b.grid_code, b.location AS geometry FROM building_now b
        WHERE (CAST(:within AS text) IS NULL OR b.grid_code LIKE :within || '%')
          AND NOT EXISTS (
            SELECT 1 FROM station s
            WHERE (CAST(:kind AS text) IS NULL OR s.kind = :kind)
              AND s.location && ST_Expand(b.location, :deg)
              AND ST_DWithin(s.location::geography, b.location::geography, :r))
        ORDER BY b.code
    """
    return _read(
        conn,
        sql,
        {"r": radius_m, "deg": metres_to_degrees(radius_m * 1.05, 60.0), "kind": kind,
         "within": within},
    )


def incidents_for_map(conn: Connection, *, within: str | None = None) -> gpd.GeoDataFrame:
    """Incidents: id, status, category, grid_code, reported_at, overdue, satisfaction, Point.

    With the incident workflow's schema (0004): ``overdue`` = still being worked on
    (reported/checked_in/consulting/in_progress) and past ``resolve_due``; ``satisfaction`` =
    the reporter's ``rating`` (1-5). On the bare 0001 table: overdue = not closed and older
    than the category's ``resolve_workdays`` in calendar days; satisfaction NULL.
    Duplicates are left out.
    """
    _check_prefix(within)
    params: dict[str, Any] = {}
    area = "true"
    if within is not None:  # a grid-code range: served by the btree on (grid_code, reported_at)
        area = code_prefix_sql("i.grid_code", within, params)
    if _has_column(conn, "incident", "resolve_due"):
        overdue = "(i.status IN :working AND i.resolve_due < now())"
        params["working"] = list(WORKING_STATUSES)
    else:
        overdue = (
            "(i.status NOT IN :working AND i.reported_at + "
            "make_interval(days => ceil(c.resolve_workdays)::int) < now())"
        )
        params["working"] = list(CLOSED_STATUSES)
    sat = "i.rating::float" if _has_column(conn, "incident", "rating") else "NULL::float"
    sql = f"""
        SELECT i.id, i.status, i.category_code AS category, i.grid_code, i.reported_at,
               coalesce({overdue}, false) AS overdue, {sat} AS satisfaction,
               i.location AS geometry
        FROM incident i JOIN incident_category c ON c.code = i.category_code
        WHERE {area} AND i.status <> 'duplicate'
        ORDER BY i.id
    """  # only fixed SQL fragments are interpolated; every value is bound
    stmt = text(sql).bindparams(bindparam("working", expanding=True))
    df = gpd.read_postgis(stmt, conn, geom_col="geometry", crs=4326, params=params)
    df["reported_at"] = pd.to_datetime(df["reported_at"], utc=True).astype(str)
    return df


def circles_for_map(conn: Connection, run_id: int, *, simplify_m: float = 2.0) -> gpd.GeoDataFrame:
    """Service circles of a circles run (largest tier per station): station_code, kind, tier_m."""
    sql = """
        SELECT DISTINCT ON (c.station_id) s.code AS station_code, s.kind, c.tier_m,
               ST_SimplifyPreserveTopology(c.geom, :tol) AS geometry
        FROM service_circle c JOIN station s ON s.id = c.station_id
        WHERE c.run_id = :run ORDER BY c.station_id, c.tier_m DESC
    """
    return _read(conn, sql, {"run": run_id, "tol": _deg(simplify_m)})


def uncovered_from_run(
    conn: Connection, run_id: int, *, within: str | None = None
) -> gpd.GeoDataFrame:
    """Buildings a coverage run found uncovered: code, households, grid_code, Point."""
    _check_prefix(within)
    sql = """
        SELECT b.code, b.households, b.grid_code, b.location AS geometry
        FROM building_coverage bc JOIN building_now b ON b.id = bc.building_id
        WHERE bc.run_id = :run AND NOT bc.covered
          AND (CAST(:within AS text) IS NULL OR b.grid_code LIKE :within || '%')
        ORDER BY b.code
    """
    return _read(conn, sql, {"run": run_id, "within": within})


def suggestions_for_map(conn: Connection, run_id: int) -> gpd.GeoDataFrame:
    """Suggested new sites of a siting run: name (rank), kind (method), households_gained."""
    sql = """
        SELECT '#' || rank AS name, method AS kind, round(gain_residents)::int AS households_gained,
               geom AS geometry
        FROM site_suggestion WHERE run_id = :run ORDER BY method, rank
    """
    return _read(conn, sql, {"run": run_id})


def grid_map_inputs(conn: Connection, *, within: str | None = None,
                    simplify_m: float = 2.0) -> dict[str, gpd.GeoDataFrame]:
    """Inputs of the grid map (EPSG:4326): grids, streets, communities, stations."""
    parent = (street_of(within) or within) if within else within
    return {
        "grids": grids_for_map(conn, within=within, simplify_m=simplify_m),
        "streets": areas_for_map(conn, "street", within=parent, simplify_m=simplify_m),
        "communities": areas_for_map(conn, "community", within=within, simplify_m=simplify_m),
        "stations": stations_for_map(conn, within=within),
    }


def incident_map_inputs(conn: Connection, *, within: str | None = None,
                        simplify_m: float = 2.0) -> dict[str, gpd.GeoDataFrame]:
    """Inputs of the incident map (EPSG:4326): incidents and grids."""
    return {
        "incidents": incidents_for_map(conn, within=within),
        "grids": areas_for_map(conn, "grid", within=within, simplify_m=simplify_m),
    }


def coverage_inputs(
    conn: Connection,
    *,
    radius_m: float = 1000.0,
    kind: str | None = None,
    within: str | None = None,
    simplify_m: float = 2.0,
) -> dict[str, gpd.GeoDataFrame | None]:
    """Inputs of the coverage map: stations, circles, uncovered, grids, suggested.

    Uses the newest finished circles / coverage / siting runs (migration 0003) when they
    exist; otherwise (or with ``kind``) the plain ``radius_m`` test of
    :func:`uncovered_buildings` and no circles (the map draws radius circles).
    """
    stations = stations_for_map(conn, within=within)
    if kind is not None:
        stations = stations[stations["kind"] == kind]
    runs = _has_table(conn, "analysis_run")
    circles_run = latest_run(conn, "circles", missing_ok=True) if runs else None
    coverage_run = latest_run(conn, "coverage", missing_ok=True) if runs else None
    siting_run = latest_run(conn, "siting", missing_ok=True) if runs else None
    circles = circles_for_map(conn, circles_run, simplify_m=simplify_m) if circles_run else None
    if circles is not None and kind is not None:
        circles = circles[circles["kind"] == kind]
    if coverage_run and kind is None:
        uncovered = uncovered_from_run(conn, coverage_run, within=within)
    else:
        uncovered = uncovered_buildings(conn, radius_m=radius_m, kind=kind, within=within)
    return {
        "stations": stations,
        "circles": circles,
        "uncovered": uncovered,
        "grids": areas_for_map(conn, "grid", within=within, simplify_m=simplify_m),
        "suggested": suggestions_for_map(conn, siting_run) if siting_run else None,
    }
