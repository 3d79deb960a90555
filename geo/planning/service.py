"""Grid redrawing: split, merge, reshape, reassign, layer import; checks, generations, drafts.

Every accepted change writes ONE new ``generation`` (``effective_from`` a parameter, default
now). Unchanged areas are carried over untouched (their ``generation_high`` stays NULL); each
changed or removed grid gets ``generation_high`` = the previous generation and each changed or
new grid a new version with ``generation_low`` = the new generation. So an area is valid in
generation g when ``generation_low <= g <= coalesce(generation_high, inf)`` (as in
``geo.data.store.write_layers`` and the lookup's ``at=``).

The change is written inside a SAVEPOINT, then checked in PostGIS on the affected communities
only (GiST indexes; never a whole-district pass): each grid inside its community, no overlap with
a sibling, no gap in the community's cover, every building in exactly one grid, households per
grid within the balance rule. Any failure rolls the savepoint back (the database is exactly as
before) and raises ``InvalidInput`` with one ``Problem`` per failure: what, where (grid or
building code, a lon/lat point) and by how much (m², households).

Geometry is EPSG:4326; areas are measured in m² in the district's metric CRS (UTM).

Numbering (DB11): new grid codes in a community take the next unused 3-digit numbers (after the
highest number ever used there, retired codes included, so no code is ever reused), ordered by
rows north→south (row = floor(distance of the centroid below the community's north edge /
``numbering_row_m``)), and west→east within a row.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pydantic import Field
from pyproj import Transformer
from shapely.geometry import shape
from shapely.ops import split as shapely_split
from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.core.errors import Conflict, InvalidInput, NotFound, Problem
from geo.core.settings import DataSettings, WanggeSettings

log = logging.getLogger(__name__)


class PlanningSettings(WanggeSettings):
    """Rules applied to every grid redraw."""

    households_min: int = Field(default=DataSettings().households_min,
                                description="Balance rule: fewest households a grid.")
    households_max: int = Field(default=DataSettings().households_max,
                                description="Balance rule: most households a grid.")
    balance_mode: Literal["warn", "error"] = Field(
        default="error", description="A grid outside the balance rule: 'error' refuses the "
        "change, 'warn' accepts it and lists a warning.")
    gap_tolerance_m2: float = Field(default=1.0, description="Largest uncovered area (m²) "
                                    "a community's grids may leave.")
    overlap_tolerance_m2: float = Field(default=1.0, description="Largest overlap (m²) "
                                        "between two sibling grids.")
    containment_tolerance_m2: float = Field(default=1.0, description="Largest area (m²) of a "
                                            "grid outside its community.")
    numbering_row_m: float = Field(default=150.0, description="DB11 numbering: height (m) of "
                                   "the north→south rows new codes are numbered in.")
    draft_ratio: float = Field(default=1.5, description="Draft partition: stop searching once "
                               "every grid keeps the balance rule and the largest is at most "
                               "this × the smallest, by households.")
    draft_unit_households: int = Field(default=30, description="Draft partition: street "
                                       "blocks holding more households are cut between "
                                       "buildings into strips of about this many.")


@dataclass
class ChangeResult:
    """An accepted change: its generation and what it did."""

    generation: int
    operation: str
    created: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    buildings_moved: int = 0
    warnings: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# --------------------------------------------------------------------------------------------
# helpers


def _metric_srid(conn: Connection) -> int:
    srid = conn.execute(text(
        "SELECT metric_srid FROM area WHERE level = 'district' AND generation_high IS NULL "
        "LIMIT 1")).scalar()
    if srid is None:
        raise NotFound("no current district: load a district first")
    return int(srid)


def _current_grid(conn: Connection, code: str) -> dict[str, Any]:
    row = conn.execute(text(
        "SELECT code, parent_code, name, responsible_body, ST_AsBinary(geom) AS wkb FROM area "
        "WHERE level = 'grid' AND code = :c AND generation_high IS NULL"), {"c": code}
    ).mappings().first()
    if row is None:
        raise NotFound(f"no current grid {code}",
                       [Problem(reason="no such current grid", field="code", feature=code)])
    out = dict(row)
    out["geom"] = shapely.from_wkb(bytes(row["wkb"]))
    return out


def building_grids(conn: Connection, codes: list[str]) -> dict[str, str | None]:
    """{building code: its current grid code} for the known buildings among ``codes``."""
    return dict(conn.execute(text("SELECT code, grid_code FROM building WHERE code = ANY(:c)"),
                             {"c": codes}).all())


def _as_geom(value: Any, what: str) -> Any:
    """A shapely geometry from a shapely object, GeoJSON dict/str or WKT (EPSG:4326)."""
    try:
        if isinstance(value, shapely.Geometry):
            g = value
        elif isinstance(value, dict):
            g = shape(value.get("geometry", value))
        elif isinstance(value, str) and value.lstrip().startswith("{"):
            g = shape(json.loads(value))
        else:
            g = shapely.from_wkt(value)
    except Exception as exc:  # shapely/json raise several types
        raise InvalidInput(f"{what}: not a geometry",
                           [Problem(reason=str(exc), field=what)]) from exc
    if g is None or g.is_empty:
        raise InvalidInput(f"{what}: empty geometry", [Problem(reason="empty", field=what)])
    return g


def _multi(g: Any) -> Any:
    if not g.is_valid:
        raise InvalidInput("invalid polygon", [Problem(
            reason=shapely.is_valid_reason(g), field="geometry")])
    if g.geom_type == "Polygon":
        return shapely.MultiPolygon([g])
    if g.geom_type == "MultiPolygon":
        return g
    polys = [p for p in getattr(g, "geoms", []) if p.geom_type == "Polygon"]
    if not polys:
        raise InvalidInput("geometry must be a polygon",
                           [Problem(reason=f"got {g.geom_type}", field="geometry")])
    return shapely.MultiPolygon(polys)


def _latest_generation(conn: Connection) -> tuple[int | None, datetime | None]:
    row = conn.execute(text(
        "SELECT id, effective_from FROM generation ORDER BY id DESC LIMIT 1")).first()
    return (row[0], row[1]) if row else (None, None)


def allocate_codes(conn: Connection, community: str, geoms: list[Any],
                   settings: PlanningSettings) -> list[str]:
    """New grid codes for ``geoms`` (EPSG:4326) in ``community``, by the DB11 rule.

    Numbers continue after the highest ever used in the community (retired ones included);
    rows north→south of ``numbering_row_m`` metres, west→east within a row.
    """
    if not geoms:
        return []
    top = conn.execute(text(
        "SELECT greatest("
        " (SELECT max(substr(code, 13, 3)::int) FROM area WHERE level = 'grid' "
        "  AND parent_code = :c),"
        " (SELECT max(substr(code, 13, 3)::int) FROM retired_code WHERE level = 'grid' "
        "  AND left(code, 12) = :c))"), {"c": community}).scalar() or 0
    if top + len(geoms) > 999:
        raise Conflict(f"community {community} has no free grid numbers left",
                       [Problem(reason=f"{top} used, {len(geoms)} needed", feature=community)])
    srid = _metric_srid(conn)
    tr = Transformer.from_crs(4326, srid, always_xy=True)
    cent = shapely.centroid(np.asarray(geoms, dtype=object))
    x, y = tr.transform(shapely.get_x(cent), shapely.get_y(cent))
    north = float(np.max(y))
    comm = conn.execute(text(
        "SELECT ST_YMax(ST_Transform(geom, :s)) FROM area WHERE level = 'community' "
        "AND code = :c AND generation_high IS NULL"), {"c": community, "s": srid}).scalar()
    if comm is not None:
        north = float(comm)
    rows = np.floor((north - np.asarray(y)) / settings.numbering_row_m)
    order = np.lexsort((np.asarray(x), rows))
    codes = [""] * len(geoms)
    for rank, i in enumerate(order):
        codes[int(i)] = f"{community}{top + 1 + rank:03d}"
    return codes


# --------------------------------------------------------------------------------------------
# checks

CONTAIN_SQL = """
SELECT g.code, c.code AS community,
       ST_Area(ST_Transform(ST_Difference(g.geom, c.geom), :srid)) AS m2,
       ST_X(ST_PointOnSurface(ST_Difference(g.geom, c.geom))) AS lon,
       ST_Y(ST_PointOnSurface(ST_Difference(g.geom, c.geom))) AS lat
FROM area g LEFT JOIN area c ON c.level = 'community' AND c.code = g.parent_code
     AND c.generation_high IS NULL
WHERE g.level = 'grid' AND g.generation_high IS NULL AND g.code = ANY(:codes)
"""

OVERLAP_SQL = """
SELECT g.code, s.code AS other,
       ST_Area(ST_Transform(ST_Intersection(g.geom, s.geom), :srid)) AS m2,
       ST_X(ST_PointOnSurface(ST_Intersection(g.geom, s.geom))) AS lon,
       ST_Y(ST_PointOnSurface(ST_Intersection(g.geom, s.geom))) AS lat
FROM area g JOIN area s ON s.level = 'grid' AND s.generation_high IS NULL
     AND s.parent_code = g.parent_code AND s.code <> g.code AND ST_Intersects(g.geom, s.geom)
     AND NOT (s.code = ANY(:codes) AND s.code < g.code)
WHERE g.level = 'grid' AND g.generation_high IS NULL AND g.code = ANY(:codes)
  AND NOT ST_Touches(g.geom, s.geom)
"""

GAP_SQL = """
WITH u AS (
    SELECT c.code, ST_Difference(c.geom, coalesce(ST_Union(g.geom),
           'SRID=4326;POLYGON EMPTY'::geometry)) AS gap
    FROM area c LEFT JOIN area g ON g.level = 'grid' AND g.generation_high IS NULL
         AND g.parent_code = c.code
    WHERE c.level = 'community' AND c.generation_high IS NULL AND c.code = ANY(:comms)
    GROUP BY c.code, c.geom
)
SELECT code, ST_Area(ST_Transform(gap, :srid)) AS m2,
       ST_X(ST_PointOnSurface(gap)) AS lon, ST_Y(ST_PointOnSurface(gap)) AS lat
FROM u WHERE NOT ST_IsEmpty(gap)
"""

# Polygons are the outer loop (one GiST probe of building per grid): a points-outer join
# probes the area index once per building and is several times slower at city scale.
BUILDING_SQL = """
WITH c AS (SELECT geom FROM area WHERE level = 'community' AND generation_high IS NULL
           AND code = ANY(:comms)),
b AS (SELECT DISTINCT b.id, b.code, b.location, b.grid_code FROM c
      JOIN building b ON ST_Intersects(c.geom, b.location)),
g AS (SELECT DISTINCT g.code, g.geom FROM c JOIN area g ON g.level = 'grid'
      AND g.generation_high IS NULL AND g.geom && c.geom),
hits AS (SELECT b.id, array_agg(g.code ORDER BY g.code) AS grids FROM g
         JOIN building b ON ST_Intersects(g.geom, b.location) GROUP BY b.id)
SELECT b.code, b.grid_code, ST_X(b.location) AS lon, ST_Y(b.location) AS lat,
       coalesce(h.grids, '{}') AS grids
FROM b LEFT JOIN hits h ON h.id = b.id
WHERE coalesce(cardinality(h.grids), 0) <> 1
   OR NOT EXISTS (SELECT 1 FROM area a WHERE a.level = 'grid' AND a.generation_high IS NULL
                  AND a.code = b.grid_code)
"""

MOVE_SQL = """
WITH m AS (
    SELECT DISTINCT ON (b.id) b.id, b.code, b.grid_code AS old, g.code AS new
    FROM area g JOIN building b ON ST_Intersects(g.geom, b.location)
    WHERE g.level = 'grid' AND g.generation_high IS NULL AND g.code = ANY(:t)
    ORDER BY b.id, g.code
), moved AS (SELECT * FROM m WHERE old IS DISTINCT FROM new),
log AS (INSERT INTO building_move (generation_id, building_code, from_grid, to_grid)
        SELECT :g, code, old, new FROM moved)
UPDATE building b SET grid_code = moved.new FROM moved WHERE b.id = moved.id
"""

HOUSEHOLD_SQL = """
SELECT a.code, coalesce(sum(b.households), 0)::int AS households,
       ST_X(ST_PointOnSurface(a.geom)) AS lon, ST_Y(ST_PointOnSurface(a.geom)) AS lat
FROM area a LEFT JOIN building b ON b.grid_code = a.code
WHERE a.level = 'grid' AND a.generation_high IS NULL AND a.code = ANY(:codes)
GROUP BY a.code, a.geom
"""


def check_communities(conn: Connection, communities: list[str], grids: list[str],
                      settings: PlanningSettings) -> tuple[list[Problem], list[Problem]]:
    """Check the CURRENT state of ``communities`` (and the ``grids`` changed in them).

    Returns (errors, warnings). Measures in m² in the district's metric CRS.
    """
    srid = _metric_srid(conn)
    errors: list[Problem] = []
    warnings: list[Problem] = []
    p = {"codes": grids, "comms": communities, "srid": srid}
    for r in conn.execute(text(CONTAIN_SQL), p).mappings():
        if r["community"] is None:
            errors.append(Problem(reason="parent community does not exist", field="parent_code",
                                  feature=r["code"]))
        elif r["m2"] > settings.containment_tolerance_m2:
            errors.append(Problem(
                reason=f"grid lies {r['m2']:.1f} m² outside community {r['community']}",
                field="geometry", feature=r["code"],
                detail={"check": "inside_community", "m2": round(r["m2"], 2),
                        "lon": r["lon"], "lat": r["lat"]}))
    for r in conn.execute(text(OVERLAP_SQL), p).mappings():
        if r["m2"] > settings.overlap_tolerance_m2:
            errors.append(Problem(
                reason=f"grid overlaps sibling {r['other']} by {r['m2']:.1f} m²",
                field="geometry", feature=r["code"],
                detail={"check": "overlap", "other": r["other"], "m2": round(r["m2"], 2),
                        "lon": r["lon"], "lat": r["lat"]}))
    for r in conn.execute(text(GAP_SQL), p).mappings():
        if r["m2"] > settings.gap_tolerance_m2:
            errors.append(Problem(
                reason=f"community cover leaves a gap of {r['m2']:.1f} m²",
                field="geometry", feature=r["code"],
                detail={"check": "gap", "m2": round(r["m2"], 2), "lon": r["lon"],
                        "lat": r["lat"]}))
    for r in conn.execute(text(BUILDING_SQL), p).mappings():
        n = len(r["grids"])
        if n != 1:
            reason = ("building lies in no grid" if n == 0 else
                      f"building lies in {n} grids: {', '.join(r['grids'])}")
        else:
            reason = f"building is assigned to {r['grid_code']}, which is not a current grid"
        errors.append(Problem(reason=reason, field="location", feature=r["code"],
                              detail={"check": "building_in_one_grid", "grids": list(r["grids"]),
                                      "lon": r["lon"], "lat": r["lat"]}))
    lo, hi = settings.households_min, settings.households_max
    for r in conn.execute(text(HOUSEHOLD_SQL), p).mappings():
        h = r["households"]
        if lo <= h <= hi:
            continue
        by = lo - h if h < lo else h - hi
        prob = Problem(
            reason=f"grid has {h} households, {by} {'below' if h < lo else 'above'} the "
            f"balance rule {lo}-{hi}", field="households", feature=r["code"],
            detail={"check": "balance", "households": h, "by": by, "lon": r["lon"],
                    "lat": r["lat"]})
        (errors if settings.balance_mode == "error" else warnings).append(prob)
    return errors, warnings


# --------------------------------------------------------------------------------------------
# the one writer every operation goes through


def apply_change(
    conn: Connection,
    operation: str,
    *,
    replace: dict[str, Any] | None = None,
    retire: list[str] | None = None,
    create: list[dict[str, Any]] | None = None,
    reassign: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
    effective_from: datetime | None = None,
    settings: PlanningSettings | None = None,
    note: str | None = None,
) -> ChangeResult:
    """Write one change as a new generation, check it, keep it or roll it back.

    ``replace``: {grid code: new geometry}; ``retire``: grid codes closed and retired;
    ``create``: [{code?, parent_code, geometry, name?, responsible_body?}] (codes allocated by
    DB11 where missing); ``reassign``: {building code: grid code}. Geometry EPSG:4326.
    Runs in a SAVEPOINT of the caller's transaction: refused → nothing written.
    """
    settings = settings or PlanningSettings()
    replace = replace or {}
    retire = list(retire or [])
    create = list(create or [])
    reassign = dict(reassign or {})
    latest, latest_eff = _latest_generation(conn)
    if latest is None:
        raise NotFound("no generation yet: load a district first")
    if effective_from is not None and latest_eff is not None:
        eff = effective_from if effective_from.tzinfo else effective_from.astimezone()
        if eff < latest_eff:
            raise InvalidInput("effective date precedes the latest generation", [Problem(
                reason=f"must be on or after {latest_eff.isoformat()}",
                field="effective_from")])
    sp = conn.begin_nested()
    try:
        result = _write(conn, operation, replace, retire, create, reassign, params or {},
                        effective_from, settings, note)
    except Exception:
        sp.rollback()
        raise
    sp.commit()
    return result


def _write(conn: Connection, operation: str, replace: dict[str, Any], retire: list[str],
           create: list[dict[str, Any]], reassign: dict[str, str], params: dict[str, Any],
           effective_from: datetime | None, settings: PlanningSettings,
           note: str | None) -> ChangeResult:
    closed = sorted(set(replace) | set(retire))
    cur = {r[0]: r for r in conn.execute(text(
        "SELECT code, parent_code, name, responsible_body FROM area WHERE level = 'grid' "
        "AND generation_high IS NULL AND code = ANY(:c)"), {"c": closed}).all()}
    missing = [c for c in closed if c not in cur]
    if missing:
        raise NotFound("grids not current", [Problem(reason="no such current grid",
                                                      field="code", feature=c) for c in missing])
    # codes for new grids (DB11 within each community)
    by_comm: dict[str, list[int]] = {}
    for i, item in enumerate(create):
        if not item.get("code"):
            by_comm.setdefault(item["parent_code"], []).append(i)
        else:
            item["parent_code"] = item.get("parent_code") or str(item["code"])[:12]
    for comm, idx in by_comm.items():
        codes = allocate_codes(conn, comm, [create[i]["geometry"] for i in idx], settings)
        for i, c in zip(idx, codes, strict=True):
            create[i]["code"] = c
    new_codes = [str(c["code"]) for c in create]
    retire_set, new_set, closed_set = set(retire), set(new_codes), set(closed)  # O(1) tests
    clash = conn.execute(text(
        "SELECT code FROM retired_code WHERE code = ANY(:c) UNION "
        "SELECT code FROM area WHERE generation_high IS NULL AND code = ANY(:c)"),
        {"c": [c for c in new_codes if c not in retire_set]}).scalars().all()
    if clash:
        raise Conflict("codes already in use or retired", [
            Problem(reason="code is current or was retired; codes are never reused",
                    field="code", feature=c) for c in sorted(clash)])

    gen = conn.execute(text(
        "INSERT INTO generation (kind, note, effective_from) VALUES "
        "(:k, :n, coalesce(CAST(:ef AS timestamptz), now())) RETURNING id"),
        {"k": f"planning:{operation}", "n": note or operation, "ef": effective_from}).scalar_one()
    prev = conn.execute(text("SELECT max(id) FROM generation WHERE id < :g"),
                        {"g": gen}).scalar_one()
    if closed:
        conn.execute(text(
            "UPDATE area SET generation_high = :prev WHERE level = 'grid' "
            "AND generation_high IS NULL AND code = ANY(:c)"), {"prev": prev, "c": closed})
    rows = []
    for code, geom in replace.items():
        c = cur[code]
        rows.append({"code": code, "parent": c[1], "name": c[2], "rb": c[3],
                     "wkb": _multi(_as_geom(geom, f"geometry of {code}")).wkb})
    for item in create:
        rows.append({"code": str(item["code"]), "parent": item["parent_code"],
                     "name": item.get("name") or f"网格{str(item['code'])[-3:]}",
                     "rb": item.get("responsible_body") or "居民委员会",
                     "wkb": _multi(_as_geom(item["geometry"], "geometry")).wkb})
    if rows:  # one statement (an executemany is a round trip and a trigger call per row)
        conn.execute(text(
            "INSERT INTO area (level, code, parent_code, name, geom, generation_low, "
            "responsible_body) SELECT 'grid', code, parent, name, "
            "ST_Multi(ST_GeomFromWKB(wkb, 4326)), :gen, rb FROM unnest("
            "CAST(:code AS text[]), CAST(:parent AS text[]), CAST(:name AS text[]), "
            "CAST(:wkb AS bytea[]), CAST(:rb AS text[])) AS t(code, parent, name, wkb, rb)"),
            {"gen": gen, **{k: [r[k] for r in rows]
                            for k in ("code", "parent", "name", "wkb", "rb")}})
    retired = [c for c in retire if c not in new_set]
    if retired:
        conn.execute(text(
            "INSERT INTO retired_code (code, level, generation_id) "
            "SELECT unnest(CAST(:c AS text[])), 'grid', :g"), {"c": retired, "g": gen})
    touched = sorted(set(closed) | set(new_codes))
    comms = sorted({str(c)[:12] for c in touched} | {str(c)[:12] for c in reassign.values()})
    moved = 0
    if touched:
        # buildings follow their location into the new or reshaped grids (a building of a
        # closed grid lies in one of them unless the cover was broken: the checks catch that)
        moved += conn.execute(text(MOVE_SQL), {"t": touched, "g": gen}).rowcount or 0
    if reassign:
        known = building_grids(conn, list(reassign))
        bad = [b for b in reassign if b not in known]
        if bad:
            raise NotFound("unknown buildings", [Problem(reason="no such building",
                                                         field="building", feature=b)
                                                 for b in bad])
        targets = set(conn.execute(text(
            "SELECT code FROM area WHERE level = 'grid' AND generation_high IS NULL "
            "AND code = ANY(:c)"), {"c": list(set(reassign.values()))}).scalars())
        wrong = [Problem(reason=f"target grid {g} is not a current grid", field="grid_code",
                         feature=b) for b, g in reassign.items() if g not in targets]
        wrong += [Problem(reason=f"building {b} is in community {str(known[b])[:12]}, grid "
                          f"{g} in {g[:12]}: reassign within a community", field="grid_code",
                          feature=b) for b, g in reassign.items()
                  if g in targets and known[b] and str(known[b])[:12] != g[:12]]
        if wrong:
            raise InvalidInput("refused: reassignment targets", wrong)
        for b, g in reassign.items():
            if known[b] != g:
                conn.execute(text(
                    "INSERT INTO building_move (generation_id, building_code, from_grid, to_grid)"
                    " VALUES (:gen, :b, :f, :t)"), {"gen": gen, "b": b, "f": known[b], "t": g})
                conn.execute(text("UPDATE building SET grid_code = :t WHERE code = :b"),
                             {"t": g, "b": b})
                moved += 1
        touched = sorted(set(touched) | set(reassign.values())
                         | {str(v) for v in known.values() if v})
    checked = sorted(set(touched) - set(retired))
    errors, warnings = check_communities(conn, comms, checked, settings)
    if errors:
        raise InvalidInput(f"refused {operation}: {len(errors)} check(s) failed; "
                           "nothing was written", errors)
    result = ChangeResult(generation=int(gen), operation=operation,
                          created=sorted(c for c in new_codes if c not in closed_set),
                          retired=retired, changed=sorted(replace), buildings_moved=moved,
                          warnings=[w.as_dict() for w in warnings])
    conn.execute(text(
        "INSERT INTO planning_change (generation_id, operation, params, summary) "
        "VALUES (:g, :o, CAST(:p AS jsonb), CAST(:s AS jsonb))"),
        {"g": gen, "o": operation, "p": json.dumps(params, default=str),
         "s": json.dumps(result.as_dict(), default=str)})
    log.info("planning %s: generation %s, created %s, retired %s, changed %s, moved %d",
             operation, gen, result.created, retired, result.changed, moved)
    return result


# --------------------------------------------------------------------------------------------
# operations


def split_grid(conn: Connection, code: str, line: Any, *, effective_from: datetime | None = None,
               settings: PlanningSettings | None = None) -> ChangeResult:
    """Split grid ``code`` along ``line`` (EPSG:4326 LineString crossing it) into new grids.

    The old code is retired; the pieces get new DB11 codes.
    """
    g = _current_grid(conn, code)
    ln = _as_geom(line, "line")
    if ln.geom_type not in ("LineString", "MultiLineString"):
        raise InvalidInput("split needs a line", [Problem(reason=f"got {ln.geom_type}",
                                                          field="line")])
    parts = [p for p in shapely_split(g["geom"], ln).geoms if p.area > 0]
    if len(parts) < 2:
        raise InvalidInput(f"the line does not cut grid {code} in two",
                           [Problem(reason="line must cross the grid from edge to edge",
                                    field="line", feature=code)])
    create = [{"parent_code": g["parent_code"], "geometry": p,
               "responsible_body": g["responsible_body"]} for p in parts]
    return apply_change(conn, "split", retire=[code], create=create,
                        params={"code": code, "line": ln.wkt}, effective_from=effective_from,
                        settings=settings)


def merge_grids(conn: Connection, codes: list[str], *, effective_from: datetime | None = None,
                settings: PlanningSettings | None = None) -> ChangeResult:
    """Merge adjacent grids of one community into one new grid (new DB11 code; old retired)."""
    codes = list(dict.fromkeys(codes))
    if len(codes) < 2:
        raise InvalidInput("merge needs two or more grids",
                           [Problem(reason="give at least two codes", field="codes")])
    grids = [_current_grid(conn, c) for c in codes]
    parents = {g["parent_code"] for g in grids}
    if len(parents) > 1:
        raise InvalidInput("grids of different communities", [
            Problem(reason=f"in community {g['parent_code']}", field="codes", feature=g["code"])
            for g in grids])
    union = shapely.union_all([g["geom"] for g in grids]).buffer(0)
    if union.geom_type != "Polygon":
        raise InvalidInput("grids are not adjacent", [Problem(
            reason=f"their union has {len(getattr(union, 'geoms', [union]))} separate parts",
            field="codes")])
    return apply_change(conn, "merge", retire=codes, create=[{
        "parent_code": grids[0]["parent_code"], "geometry": union,
        "responsible_body": grids[0]["responsible_body"]}], params={"codes": codes},
        effective_from=effective_from, settings=settings)


def reshape_grids(conn: Connection, geometries: dict[str, Any], *,
                  effective_from: datetime | None = None,
                  settings: PlanningSettings | None = None) -> ChangeResult:
    """Move boundaries: replace the geometry of grids (codes kept, new versions written)."""
    if not geometries:
        raise InvalidInput("nothing to reshape", [Problem(reason="empty", field="geometries")])
    return apply_change(conn, "reshape", replace=dict(geometries),
                        params={"codes": sorted(geometries)}, effective_from=effective_from,
                        settings=settings)


def reassign_buildings(conn: Connection, assignments: dict[str, str], *,
                       effective_from: datetime | None = None,
                       settings: PlanningSettings | None = None) -> ChangeResult:
    """Reassign buildings ({building code: grid code}) within their community."""
    if not assignments:
        raise InvalidInput("nothing to reassign", [Problem(reason="empty", field="assignments")])
    return apply_change(conn, "reassign", reassign=assignments,
                        params={"assignments": assignments}, effective_from=effective_from,
                        settings=settings)


def import_grid_layer(conn: Connection, source: str | Path | gpd.GeoDataFrame, *,
                      community: str | None = None, layer: str | None = None,
                      effective_from: datetime | None = None,
                      settings: PlanningSettings | None = None) -> ChangeResult:
    """Import a redrawn grid layer (Shapefile/GPKG/GeoJSON or a GeoDataFrame) as one change.

    Scope: one ``community`` (the file's grids of it replace its grids) or the whole district.
    Grids whose code and geometry are unchanged are carried over; changed ones get new versions;
    current grids in scope missing from the file are retired; rows without a code get DB11 codes.
    """
    gdf = source if isinstance(source, gpd.GeoDataFrame) else read_grid_layer(source, layer)
    if gdf.crs is None:
        raise InvalidInput("the layer has no CRS", [Problem(reason="missing CRS", field="crs")])
    gdf = gdf.to_crs(4326)
    for col in ("code", "parent_code", "name", "responsible_body"):
        if col not in gdf.columns:
            gdf[col] = None
    gdf["code"] = gdf["code"].map(lambda v: None if v is None or pd.isna(v) or str(v) == ""
                                  else str(v))
    gdf["parent_code"] = [p if isinstance(p, str) and p else (c[:12] if c else community)
                          for p, c in zip(gdf["parent_code"], gdf["code"], strict=True)]
    if community:
        outside = gdf[gdf["parent_code"] != community]
        if len(outside):
            raise InvalidInput("features outside the community", [
                Problem(reason=f"parent_code {p} is not {community}", field="parent_code",
                        feature=i) for i, p in outside["parent_code"].head(50).items()])
    dup = gdf["code"].dropna()
    dup = dup[dup.duplicated()]
    if len(dup):
        raise InvalidInput("duplicate codes", [Problem(reason="code appears twice",
                                                       field="code", feature=c) for c in dup])
    scope = "AND parent_code = :comm" if community else ""
    cur = gpd.read_postgis(text(
        "SELECT code, parent_code, name, responsible_body, geom FROM area WHERE level = 'grid' "
        f"AND generation_high IS NULL {scope}"), conn, geom_col="geom",
        params={"comm": community}, crs=4326).set_index("code")
    have = gdf[gdf["code"].notna()].set_index("code")
    common = have.index.intersection(cur.index)
    a = np.asarray(have.loc[common].geometry.values, dtype=object)
    b = np.asarray(cur.loc[common].geometry.values, dtype=object)
    same = shapely.equals_exact(shapely.normalize(_multi_arr(a)), shapely.normalize(b), 1e-9)
    replace = {c: g for c, g, s in zip(common, a, same, strict=True) if not s}
    retire = [c for c in cur.index if c not in have.index]
    create = [{"code": c, "parent_code": r["parent_code"], "geometry": r.geometry,
               "name": r["name"], "responsible_body": r["responsible_body"]}
              for c, r in have.loc[have.index.difference(cur.index)].iterrows()]
    create += [{"parent_code": r["parent_code"], "geometry": r.geometry, "name": r["name"],
                "responsible_body": r["responsible_body"]}
               for _, r in gdf[gdf["code"].isna()].iterrows()]
    log.info("import: %d unchanged, %d reshaped, %d new, %d retired", len(common) - len(replace),
             len(replace), len(create), len(retire))
    return apply_change(conn, "import", replace=replace, retire=retire, create=create,
                        params={"community": community, "features": len(gdf),
                                "source": str(source) if not isinstance(source, gpd.GeoDataFrame)
                                else "dataframe"},
                        effective_from=effective_from, settings=settings)


def read_grid_layer(path: str | Path, layer: str | None = None) -> gpd.GeoDataFrame:
    """The grid layer of a file: ``layer`` if named (it must exist), else the layer called
    'grid', else the file's only layer. In the file's own CRS."""
    import pyogrio

    from geo.data.io import read_file

    path = Path(path)
    want = layer or "grid"
    if path.is_dir() or not path.exists():  # read_file names the missing file
        return read_file(path, layers=[want])[want]
    try:
        names = [row[0] for row in pyogrio.list_layers(path)]
    except Exception as exc:  # pyogrio raises DataSourceError and friends
        raise InvalidInput(f"cannot read {path.name}", [Problem(
            reason=str(exc), field="file", feature=path.name)]) from exc
    if len(names) == 1 and (layer is None or layer == names[0] or path.suffix != ".gpkg"):
        return read_file(path, layer="grid")["grid"]
    if want not in names:
        raise InvalidInput(f"no layer '{want}' in {path.name}", [Problem(
            reason=f"the file's layers are {', '.join(names) or 'none'}", field="layer",
            feature=want)])
    return read_file(path, layers=[want])[want]


def _multi_arr(a: np.ndarray) -> np.ndarray:
    return np.asarray([_multi(g) for g in a], dtype=object)


# --------------------------------------------------------------------------------------------
# generations


def diff_generations(conn: Connection, g1: int, g2: int) -> dict[str, Any]:
    """What changed between generations ``g1`` and ``g2`` (grids, buildings, codes)."""
    known = set(conn.execute(text("SELECT id FROM generation WHERE id = ANY(:g)"),
                             {"g": [g1, g2]}).scalars())
    miss = [g for g in (g1, g2) if g not in known]
    if miss:
        raise NotFound("no such generation", [Problem(reason="unknown generation",
                                                      field="generation", feature=g)
                                              for g in miss])
    valid = ("a.level = 'grid' AND a.generation_low <= :g "
             "AND coalesce(a.generation_high, 2147483647) >= :g")
    v1 = dict(conn.execute(text(f"SELECT a.code, a.id FROM area a WHERE {valid}"),
                           {"g": g1}).all())
    v2 = dict(conn.execute(text(f"SELECT a.code, a.id FROM area a WHERE {valid}"),
                           {"g": g2}).all())
    added = sorted(set(v2) - set(v1))
    removed = sorted(set(v1) - set(v2))
    changed = sorted(c for c in set(v1) & set(v2) if v1[c] != v2[c])
    lo, hi = min(g1, g2), max(g1, g2)
    retired = conn.execute(text(
        "SELECT code FROM retired_code WHERE generation_id > :lo AND generation_id <= :hi "
        "ORDER BY code"), {"lo": lo, "hi": hi}).scalars().all()
    comms = sorted({c[:12] for c in added + removed + changed})
    moved: dict[str, dict[str, Any]] = {}
    if comms:
        rows = conn.execute(text(f"""
            WITH b AS (SELECT b.code, b.location FROM building b JOIN area c
                       ON c.level = 'community' AND c.code = ANY(:comms)
                       AND c.generation_low <= :g2
                       AND coalesce(c.generation_high, 2147483647) >= :g2
                       AND ST_Intersects(c.geom, b.location))
            SELECT b.code,
              (SELECT a.code FROM area a WHERE {valid.replace(':g', ':g1')}
                AND ST_Intersects(a.geom, b.location) ORDER BY a.code LIMIT 1) AS g1,
              (SELECT a.code FROM area a WHERE {valid.replace(':g', ':g2')}
                AND ST_Intersects(a.geom, b.location) ORDER BY a.code LIMIT 1) AS g2
            FROM b"""), {"comms": comms, "g1": g1, "g2": g2}).all()
        for code, a, b in rows:
            if a != b:
                moved[code] = {"building": code, "from": a, "to": b, "by": "location"}
    for code, f, t in conn.execute(text(
            "SELECT building_code, from_grid, to_grid FROM building_move WHERE generation_id > "
            ":lo AND generation_id <= :hi ORDER BY generation_id, id"), {"lo": lo, "hi": hi}):
        if code not in moved:
            if g1 > g2:
                f, t = t, f
            moved[code] = {"building": code, "from": f, "to": t, "by": "assignment"}
    return {"from_generation": g1, "to_generation": g2, "grids_added": added,
            "grids_removed": removed, "grids_changed": changed,
            "codes_created": added, "codes_retired": list(retired) if g2 > g1 else [],
            "buildings_moved": sorted(moved.values(), key=lambda m: m["building"])}


def refresh_lookup(conn: Connection | None = None) -> None:
    """Ask the in-process lookup index to rebuild on next use (after a committed change)."""
    try:
        from geo.lookup import invalidate_index
    except ImportError:  # pragma: no cover - lookup is part of the project
        return
    invalidate_index()


# --------------------------------------------------------------------------------------------
# draft partition (spopt max-p over street blocks)

BLOCKS_SQL = """
WITH c AS (SELECT geom FROM area WHERE level = 'community' AND code = :c
           AND generation_high IS NULL),
lines AS (
    SELECT ST_Intersection(e.geom, c.geom) AS g FROM walk_edge e, c
    WHERE ST_Intersects(e.geom, c.geom)
    UNION ALL SELECT ST_Boundary(c.geom) FROM c
),
noded AS (SELECT ST_UnaryUnion(ST_Collect(ST_CollectionExtract(g, 2))) AS g FROM lines),
blocks AS (SELECT (ST_Dump(ST_Polygonize(g))).geom AS geom FROM noded)
SELECT ST_AsBinary(b.geom) AS wkb,
       ST_X(ST_Transform(ST_Centroid(b.geom), :srid)) AS x,
       ST_Y(ST_Transform(ST_Centroid(b.geom), :srid)) AS y,
       (SELECT coalesce(sum(bd.households), 0) FROM building bd
        WHERE ST_Intersects(b.geom, bd.location)) AS households
FROM blocks b, c WHERE ST_Within(ST_PointOnSurface(b.geom), c.geom)
"""


@dataclass
class Draft:
    """A proposed partition of one community: grids as a GeoDataFrame (EPSG:4326)."""

    community: str
    grids: gpd.GeoDataFrame
    blocks: int
    units: int
    ratio: float

    def as_geojson(self) -> dict[str, Any]:
        return json.loads(self.grids.to_json(drop_id=True))


def street_blocks(conn: Connection, community: str) -> gpd.GeoDataFrame:
    """The community's street blocks: walk edges + its boundary polygonized in PostGIS.

    Columns: households (buildings by location), x, y (centroid, metres), geometry (EPSG:4326).
    """
    srid = _metric_srid(conn)
    rows = conn.execute(text(BLOCKS_SQL), {"c": community, "srid": srid}).mappings().all()
    if not rows:
        raise NotFound(f"community {community} has no blocks (is it current?)",
                       [Problem(reason="no current community or no streets", field="community",
                                feature=community)])
    return gpd.GeoDataFrame(
        {"households": [int(r["households"]) for r in rows], "x": [r["x"] for r in rows],
         "y": [r["y"] for r in rows]},
        geometry=[shapely.from_wkb(bytes(r["wkb"])) for r in rows], crs=4326)


def draft_units(blocks: gpd.GeoDataFrame, buildings: gpd.GeoDataFrame,
                unit_households: int) -> gpd.GeoDataFrame:
    """The draft's building blocks: street blocks, each cut into strips of about
    ``unit_households`` households where it holds more.

    A block is cut across its long axis (minimum rotated rectangle) between buildings: each
    building's Voronoi cell (clipped to the block) goes to the strip its position along the axis
    falls in, by cumulative households. Inputs and output in a metric CRS (metres); output
    columns households, x, y (centroid) and geometry. Units without buildings are kept (0).
    """
    pts = buildings.geometry.values
    hh_b = buildings["households"].to_numpy()
    tree = shapely.STRtree(pts)
    geoms: list[Any] = []
    hh: list[int] = []
    for block in blocks.geometry.values:
        idx = tree.query(block, predicate="intersects")
        total = int(hh_b[idx].sum())
        k = int(np.ceil(total / max(unit_households, 1)))
        if len(idx) < 2 or k < 2:
            geoms.append(block)
            hh.append(total)
            continue
        cells = np.asarray(shapely.voronoi_polygons(shapely.multipoints(pts[idx]),
                                                    extend_to=block).geoms)
        own_pt, own_cell = shapely.STRtree(cells).query(pts[idx], predicate="intersects")
        cell_of = np.full(len(idx), -1)
        cell_of[own_pt] = own_cell
        corner = shapely.get_coordinates(shapely.minimum_rotated_rectangle(block))[:3]
        sides = np.diff(corner, axis=0)
        axis = sides[int(np.argmax(np.hypot(sides[:, 0], sides[:, 1])))]
        along = shapely.get_coordinates(pts[idx]) @ (axis / np.hypot(*axis))
        order = np.argsort(along, kind="stable")
        h = hh_b[idx][order]
        strip = np.minimum(((np.cumsum(h) - h / 2) / max(total, 1) * k).astype(int), k - 1)
        for s in np.unique(strip):
            members = order[strip == s]
            piece = shapely.intersection(shapely.union_all(cells[cell_of[members]]), block)
            geoms.append(piece)
            hh.append(int(hh_b[idx][members].sum()))
    units = gpd.GeoDataFrame({"households": hh}, geometry=geoms, crs=blocks.crs)
    units = units[~units.geometry.is_empty & (units.geometry.area > 0)].reset_index(drop=True)
    cent = units.geometry.centroid
    units["x"], units["y"] = cent.x.to_numpy(), cent.y.to_numpy()
    return units


def _score(sums: np.ndarray, lo: int, hi: int) -> tuple[int, float]:
    """(grids outside the balance rule, largest/smallest households): lower is better."""
    out = int(((sums < lo) | (sums > hi)).sum())
    return out, float(sums.max() / max(sums.min(), 1))


def _connected_without(members: set[int], drop: int, neighbors: dict[int, list[int]]) -> bool:
    rest = members - {drop}
    if not rest:
        return False
    start = next(iter(rest))
    seen, stack = {start}, [start]
    while stack:
        for j in neighbors[stack.pop()]:
            if j in rest and j not in seen:
                seen.add(j)
                stack.append(j)
    return len(seen) == len(rest)


def rebalance(labels: np.ndarray, neighbors: dict[int, list[int]], hh: np.ndarray, lo: int,
              hi: int, *, max_moves: int = 1000) -> np.ndarray:
    """Move boundary units between adjacent regions while that lowers ``_score``.

    The polish after spopt's max-p (whose floor-only constraint lets regions overshoot): each
    step takes the best single move of a unit to a neighbouring region that keeps its own region
    contiguous and non-empty. Ties on ``_score`` are broken by the sum of squared households,
    so surplus can flow through a chain of regions. Stops when no move improves. Returns new
    labels.
    """
    labels = labels.copy()
    regions = {int(r): set(np.flatnonzero(labels == r).tolist()) for r in np.unique(labels)}
    sums = {r: float(hh[list(m)].sum()) for r, m in regions.items()}
    keys = list(sums)
    for _ in range(max_moves):
        arr = np.array([sums[r] for r in keys])
        cur = (*_score(arr, lo, hi), float((arr ** 2).sum()))
        moves = []
        for i, a in enumerate(labels):
            if hh[i] == 0 and len(regions[int(a)]) > 1:
                continue
            for b in {int(labels[j]) for j in neighbors[i]} - {int(a)}:
                trial = arr.copy()
                trial[keys.index(int(a))] -= hh[i]
                trial[keys.index(b)] += hh[i]
                sc = (*_score(trial, lo, hi), float((trial ** 2).sum()))
                if sc < cur:
                    moves.append((sc, i, int(a), b))
        moves.sort()
        for _sc, i, a, b in moves:
            if _connected_without(regions[a], i, neighbors):
                regions[a].discard(i)
                regions[b].add(i)
                sums[a] -= hh[i]
                sums[b] += hh[i]
                labels[i] = b
                break
        else:
            break
    return labels


def draft_partition(conn: Connection, community: str, *,
                    settings: PlanningSettings | None = None, seed: int = 0, tries: int = 3,
                    progress: Callable[[int, int], None] | None = None) -> Draft:
    """Propose grids for ``community`` balanced by households, following streets.

    Units: street blocks (``street_blocks``), cut between buildings into strips of about
    ``draft_unit_households`` (and, as a second layout, 4/3 of it) where a block holds more
    (``draft_units``); adjacency a shared edge (libpysal Rook). spopt's ``MaxPHeuristic``
    (households floor; homogeneity on unit centroids in metres, so regions stay compact) runs
    over a sweep of floors from the balance rule and the community's total (``tries`` seeds,
    each over both layouts), stopping early once a solution meets the rule and
    ``draft_ratio``; each solution is polished by ``rebalance`` (single boundary moves) and the
    one kept has the fewest grids outside the rule, then the smallest largest/smallest
    household ratio. ``progress(done, total)`` is called after each solve.
    Nothing is written: accept with ``accept_draft``.
    """
    import libpysal
    from spopt.region import MaxPHeuristic

    settings = settings or PlanningSettings()
    srid = _metric_srid(conn)
    blocks = street_blocks(conn, community).to_crs(srid)
    bld = gpd.read_postgis(text(
        "SELECT b.households, b.location FROM building b JOIN area c ON c.level = 'community' "
        "AND c.code = :c AND c.generation_high IS NULL AND ST_Intersects(c.geom, b.location)"),
        conn, geom_col="location", params={"c": community}, crs=4326).to_crs(srid)
    lo, hi = settings.households_min, settings.households_max
    layouts = []  # (units, households, Rook neighbours, floors) per unit size
    for size in dict.fromkeys((settings.draft_unit_households,
                               round(settings.draft_unit_households * 4 / 3))):
        units = draft_units(blocks, bld, size)
        hh_units = units["households"].to_numpy().astype(float)
        total = int(hh_units.sum())
        floors: list[int] = []
        if len(units) > 1 and total > hi:
            kmin = max(1, int(np.ceil(total / hi)))
            kmax = max(kmin, int(total // max(lo, 1)))
            floors = [t for t in dict.fromkeys(
                round(total / k * f) for f in (0.85, 0.75)
                for k in range(kmin, min(kmax, kmin + 3) + 1)) if 0 < t <= total]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            w = libpysal.weights.Rook.from_dataframe(units, use_index=False,
                                                     silence_warnings=True)
        layouts.append((units, hh_units, w, floors))
    cands = [(r, i, t) for r in range(tries) for i, lay in enumerate(layouts) for t in lay[3]]
    best: tuple[tuple[int, float], np.ndarray, int] | None = None
    for n, (r, i, t) in enumerate(cands):
        if best is not None and best[0][0] == 0 and best[0][1] <= settings.draft_ratio:
            break  # good enough: every grid in the rule and within the target ratio
        units, hh_units, w, _ = layouts[i]
        np.random.seed(seed + r)
        model = MaxPHeuristic(units, w, ["x", "y"], "households", t, top_n=2,
                              max_iterations_construction=5, max_iterations_sa=1)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.solve()
        except Exception as exc:  # spopt raises on infeasible floors
            log.debug("max-p floor %s failed: %s", t, exc)
            labels = None
        else:
            labels = np.asarray(model.labels_)
        if progress is not None:
            progress(n + 1, len(cands))
        if labels is None or (labels <= 0).any():  # unassigned units (floor not reachable)
            continue
        neighbors = {int(a): [int(b) for b in bs] for a, bs in w.neighbors.items()}
        labels = rebalance(labels, neighbors, hh_units, lo, hi)
        sc = _score(np.bincount(labels, weights=hh_units)[np.unique(labels)], lo, hi)
        if best is None or sc < best[0]:
            best = (sc, labels, i)
    units = layouts[best[2] if best is not None else 0][0]
    labels = best[1] if best is not None else np.ones(len(units), int)
    units["region"] = labels
    merged = units.dissolve(by="region", aggfunc={"households": "sum"}).reset_index()
    # strips meet along Voronoi edges: close float slivers (±1 cm), keep polygons only
    merged["geometry"] = shapely.make_valid(merged.geometry.buffer(0.01).buffer(-0.01).values)
    merged["geometry"] = [_multi(g) for g in merged.geometry.values]
    merged = merged.to_crs(4326)
    grids = gpd.GeoDataFrame({"code": None, "parent_code": community,
                              "name": [f"草案{i + 1}" for i in range(len(merged))],
                              "responsible_body": "居民委员会",
                              "households": merged["households"].astype(int)},
                             geometry=merged.geometry.values, crs=4326)
    sums = grids["households"].to_numpy()
    return Draft(community=community, grids=grids, blocks=len(blocks), units=len(units),
                 ratio=float(sums.max() / max(sums.min(), 1)))


def accept_draft(conn: Connection, community: str, grids: gpd.GeoDataFrame | dict[str, Any], *,
                 effective_from: datetime | None = None,
                 settings: PlanningSettings | None = None) -> ChangeResult:
    """Accept a draft (GeoDataFrame or GeoJSON FeatureCollection) as one change of
    ``community``: its grids replace the community's, with new DB11 codes."""
    if isinstance(grids, dict):
        try:
            grids = gpd.GeoDataFrame.from_features(grids.get("features") or [], crs=4326)
        except Exception as exc:  # malformed features: shapely/geopandas raise several types
            raise InvalidInput("the draft is not a GeoJSON FeatureCollection", [Problem(
                reason=str(exc), field="draft")]) from exc
    if grids.empty or "geometry" not in grids:
        raise InvalidInput("the draft has no grids", [Problem(reason="no features",
                                                              field="draft")])
    grids = grids.copy()
    grids["code"] = None
    grids["parent_code"] = community
    return import_grid_layer(conn, grids, community=community, effective_from=effective_from,
                             settings=settings)
