"""Item queries of the OGC collections: one page of GeoJSON features built in PostGIS.

Features come out of the database as GeoJSON text (``json_build_object`` and ``ST_AsGeoJSON``
in the requested CRS and axis order), so a page is joined, not re-encoded, in Python.
Every value is a bind parameter; the SQL around them is fixed text from the registry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.auth.service import EVERYTHING, Scope, code_prefix_sql
from geo.core.errors import NotFound, Problem
from geo.incidents.cases import scope_where  # the one definition of an incident scope
from geo.ogc.collections import Collection
from geo.ogc.cql import SqlFilter
from geo.ogc.crs import DEFAULT, BadParameter, Crs, geometry_in, geometry_out

MAX_LIMIT = 10_000


@dataclass
class ItemQuery:
    """What one items request asks for (already parsed and checked)."""

    crs: Crs
    limit: int = 10
    offset: int = 0
    bbox: tuple[float, float, float, float] | None = None
    bbox_crs: Crs | None = None
    datetime: str | None = None
    filter: Any = None  # a parsed pygeofilter node
    filter_crs: Crs | None = None
    generation: int | None = None
    run: int | None = None
    tier: float | None = None
    within: str | None = None  # the caller's area (code prefix), None: everything
    scope: Scope = field(default_factory=lambda: EVERYTHING)


def parse_bbox(raw: str) -> tuple[float, float, float, float]:
    """Four numbers ``minx,miny,maxx,maxy`` in the bbox CRS's axis order (6 numbers: 3D, the
    heights are ignored)."""
    try:
        parts = [float(v) for v in raw.split(",")]
    except ValueError:
        parts = []
    if len(parts) == 6:
        parts = [parts[0], parts[1], parts[3], parts[4]]
    if len(parts) != 4 or not all(math.isfinite(v) for v in parts) \
            or parts[0] > parts[2] or parts[1] > parts[3]:
        raise BadParameter("bad bbox", [Problem(
            reason="expected four numbers minx,miny,maxx,maxy with min <= max", field="bbox")])
    return parts[0], parts[1], parts[2], parts[3]


def _interval(raw: str) -> tuple[str | None, str | None]:
    """RFC 3339 instant or interval ``a/b`` (``..`` or empty: open) → (start, end) strings."""
    def one(v: str) -> str | None:
        v = v.strip()
        if v in ("", ".."):
            return None
        try:
            datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError as exc:
            raise BadParameter("bad datetime", [Problem(
                reason=f"'{v}' is not an RFC 3339 date-time", field="datetime")]) from exc
        return v
    if "/" in raw:
        a, b = raw.split("/", 1)
        return one(a), one(b)
    v = one(raw)
    return v, v


def _resolve(conn: Connection, c: Collection, q: ItemQuery, params: dict[str, Any]) -> None:
    """Bind the generation / run / tier a collection's source reads."""
    params["gen"] = q.generation
    if c.generations and q.datetime and q.generation is None:
        start, end = _interval(q.datetime)
        if start != end:
            raise BadParameter("an instant is needed", [Problem(
                reason="areas of a date: give one instant, not an interval", field="datetime")])
        params["gen"] = conn.execute(text("SELECT generation_at(CAST(:t AS timestamptz))"),
                                     {"t": start}).scalar()
        if params["gen"] is None:
            raise NotFound("no generation was in force at that date", [Problem(
                reason=f"no generation before {start}", field="datetime")])
    if c.run_kind:
        run = q.run
        if run is None:
            run = conn.execute(text(
                "SELECT max(id) FROM analysis_run WHERE kind = :k AND status = 'done'"),
                {"k": c.run_kind}).scalar()
        params["run"] = run if run is not None else -1
        params["tier"] = q.tier


def where_clause(conn: Connection, c: Collection, q: ItemQuery,
                 params: dict[str, Any]) -> str:
    """The WHERE of a query on ``c`` (alias ``t``) for ``q``; binds into ``params``."""
    _resolve(conn, c, q, params)
    where = ["true"]
    if q.within is not None:
        if c.area_column:
            where.append(code_prefix_sql(f"t.{c.area_column}", q.within, params, "area"))
        else:  # walk network, barriers: the features touching the caller's area
            where.append("EXISTS (SELECT 1 FROM area_current w WHERE w.code = :area_code "
                         "AND ST_Intersects(w.geom, t.geom))")
            params["area_code"] = q.within
    if q.bbox is not None:
        bcrs = q.bbox_crs or DEFAULT
        x0, y0, x1, y1 = q.bbox
        params.update(bx0=x0, by0=y0, bx1=x1, by1=y1)
        env = geometry_in("ST_MakeEnvelope(:bx0, :by0, :bx1, :by1)", bcrs)
        where.append(f"t.geom && {env} AND ST_Intersects(t.geom, {env})")
    if q.datetime and c.temporal:
        start, end = _interval(q.datetime)
        if start is not None:
            where.append(f"t.{c.temporal} >= CAST(:dt0 AS timestamptz)")
            params["dt0"] = start
        if end is not None:
            where.append(f"t.{c.temporal} <= CAST(:dt1 AS timestamptz)")
            params["dt1"] = end
    if q.filter is not None:
        cols = {name: f"t.{name}" for name in c.properties}
        where.append(SqlFilter(cols, c.properties, q.filter_crs or DEFAULT, params).sql(q.filter))
    return " AND ".join(where)


def source_sql(c: Collection, scope: Scope, params: dict[str, Any]) -> str:
    """The collection's row source with the caller's incident scope filled in."""
    if "{scope}" in c.source:
        return c.source.format(scope=" AND ".join(scope_where(scope, params)) or "true")
    return c.source


def _feature_sql(c: Collection, crs: Crs) -> str:
    props = ", ".join(f"'{name}', t.{name}" for name in c.properties)
    return (f"json_build_object('type', 'Feature', 'id', t.fid, 'geometry', "
            f"CAST(ST_AsGeoJSON({geometry_out('t.geom', crs)}, {crs.digits}) AS json), "
            f"'properties', json_build_object({props}))")


def page(conn: Connection, c: Collection, q: ItemQuery) -> tuple[list[str], int]:
    """One page of features (GeoJSON text each, ordered by id) and the number matched."""
    if not 1 <= q.limit <= MAX_LIMIT:
        raise BadParameter("limit out of range", [Problem(
            reason=f"must be between 1 and {MAX_LIMIT}", field="limit")])
    if q.offset < 0:
        raise BadParameter("offset out of range", [Problem(reason="must be >= 0",
                                                           field="offset")])
    params: dict[str, Any] = {}
    src = source_sql(c, q.scope, params)
    where = where_clause(conn, c, q, params)
    matched = conn.execute(text(f"SELECT count(*) FROM {src} t WHERE {where}"),
                           params).scalar_one()
    params.update(lim=q.limit, off=q.offset)
    rows = conn.execute(text(
        f"SELECT CAST({_feature_sql(c, q.crs)} AS text) FROM {src} t WHERE {where} "
        "ORDER BY t.fid LIMIT :lim OFFSET :off"), params).scalars().all()
    return list(rows), int(matched)


def one(conn: Connection, c: Collection, q: ItemQuery, fid: str) -> str:
    """One feature (GeoJSON text) by id, or NotFound (also when outside the caller's scope)."""
    params: dict[str, Any] = {}
    src = source_sql(c, q.scope, params)
    where = where_clause(conn, c, q, params)
    if c.id_type == "integer":
        if not fid.isdigit() or len(fid) > 18:
            raise NotFound(f"no feature {fid} in {c.id}")
        params["fid"] = int(fid)
    else:
        params["fid"] = fid
    row = conn.execute(text(f"SELECT CAST({_feature_sql(c, q.crs)} AS text) FROM {src} t "
                            f"WHERE {where} AND t.fid = :fid"), params).scalar()
    if row is None:
        raise NotFound(f"no feature {fid} in collection {c.id}", [Problem(
            reason="no such feature (or outside your area)", field="featureId", feature=fid)])
    return str(row)


def extent(conn: Connection, c: Collection, scope: Scope) -> list[float] | None:
    """Bounding box (CRS84) of the collection's current rows, from the index when it can."""
    params: dict[str, Any] = {"gen": None, "run": -1, "tier": None}
    src = source_sql(c, scope, params)
    box = conn.execute(text(f"SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
                            f"(SELECT ST_Extent(t.geom) AS e FROM {src} t) x"), params).first()
    return None if box is None or box[0] is None else [float(v) for v in box]
