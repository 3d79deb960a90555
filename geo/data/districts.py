"""Per-district imports: which districts a file covers, and replacing rows only within them.

Rules (issue 16):

* the districts a file covers are the 6-digit prefixes of its area codes (any level at or
  below district), and its other rows are placed among those districts only; a file without
  area layers covers the districts its rows fall in (placed among the database's current
  districts);
* a non-area row (building, station, walk edge, barrier) belongs to one district: a building's
  by its ``grid_code`` when given, else (and for the others) the district whose polygon holds
  its representative point (building/station location, an edge's midpoint, a barrier's point on
  surface; on a shared boundary the smallest code), else the nearest covered district;
* the walking network may cross district borders: a new file's walk nodes that coincide (to
  1e-7 degrees, ~1 cm) with nodes kept from other districts take those nodes' ids, so that the
  network stays connected; the file's other node ids are moved past the kept ones.

Geometry is WGS 84 (EPSG:4326) degrees throughout.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.core.codes import district_of

ROUND = 7  # decimal degrees at which walk nodes of two files are the same node (~1 cm)


def area_districts(layers: dict[str, Any], levels: Iterable[str]) -> set[str]:
    """Districts named by the codes of the area layers ``levels`` of ``layers``."""
    out: set[str] = set()
    for level in levels:
        if level in ("province", "city"):
            continue
        codes = pd.Series(layers[level]["code"]).dropna().astype(str)
        out.update(d for d in (district_of(c) for c in codes.unique()) if d)
    return out


def district_polygons(conn: Connection, layers: dict[str, Any]) -> dict[str, Any]:
    """code -> polygon of the districts rows are placed in: the file's district layer, else the
    database's current districts."""
    dl = layers.get("district")
    if dl is not None and len(dl):
        return dict(zip(dl["code"].astype(str), np.asarray(dl.geometry.values), strict=True))
    rows = conn.execute(text(
        "SELECT code, ST_AsBinary(geom) FROM area WHERE level = 'district' "
        "AND generation_high IS NULL ORDER BY code")).all()
    return {code: shapely.from_wkb(bytes(wkb)) for code, wkb in rows}


def place(points: np.ndarray, polygons: dict[str, Any]) -> np.ndarray:
    """District code of each point (object array): the smallest code whose polygon covers it,
    else the nearest district; None when there are no districts."""
    out = np.full(len(points), None, dtype=object)
    if not polygons or len(points) == 0:
        return out
    codes = sorted(polygons)
    geoms = np.array([polygons[c] for c in codes], dtype=object)
    tree = shapely.STRtree(geoms)
    ok = ~shapely.is_missing(points)
    idx = np.flatnonzero(ok)
    hit_pt, hit_d = tree.query(points[idx], predicate="intersects")
    best = np.full(idx.size, len(codes), dtype=np.int64)
    np.minimum.at(best, hit_pt, hit_d)
    miss = np.flatnonzero(best == len(codes))
    if miss.size:
        near_pt, near_d = tree.query_nearest(points[idx[miss]], return_distance=False)
        best[miss[near_pt]] = near_d
    out[idx] = np.asarray(codes, dtype=object)[best]
    return out


def representative_points(name: str, gdf: gpd.GeoDataFrame) -> np.ndarray:
    """The point a row of layer ``name`` is placed by (see the module docstring)."""
    geoms = np.asarray(gdf.geometry.values, dtype=object)
    if name == "walk_edge":
        points: np.ndarray = shapely.line_interpolate_point(geoms, 0.5, normalized=True)
    else:
        points = shapely.point_on_surface(geoms)
    return points


def row_districts(name: str, gdf: gpd.GeoDataFrame, polygons: dict[str, Any]) -> np.ndarray:
    """District code of each row of non-area layer ``name``."""
    out = place(representative_points(name, gdf), polygons)
    if name == "building" and "grid_code" in gdf.columns:
        by_code = np.array([district_of(c) if isinstance(c, str) and c else None
                            for c in gdf["grid_code"].values], dtype=object)
        out = np.where(pd.notna(by_code), by_code, out)
    return out


def clear_within(conn: Connection, table: str, districts: list[str] | None) -> None:
    """Delete ``table``'s rows of ``districts`` (all rows when None, or when no other district
    has rows: then TRUNCATE, far cheaper for 500,000 rows)."""
    if districts is not None:
        others = conn.execute(text(
            f"SELECT EXISTS (SELECT 1 FROM {table} WHERE district_code IS NULL "
            "OR district_code <> ALL(:d))"), {"d": districts}).scalar()
        if others:
            conn.execute(text(f"DELETE FROM {table} WHERE district_code = ANY(:d)"),
                         {"d": districts})
            return
    conn.execute(text(f"TRUNCATE {table}"))


def clear_walk(conn: Connection, districts: list[str] | None) -> bool:
    """Delete the walk edges of ``districts`` and the nodes no kept edge uses; True when edges
    of other districts are kept (then node ids must be matched, see ``match_nodes``)."""
    if districts is None:
        conn.execute(text("TRUNCATE walk_edge, walk_node"))
        return False
    kept = conn.execute(text(
        "SELECT EXISTS (SELECT 1 FROM walk_edge WHERE district_code IS NULL "
        "OR district_code <> ALL(:d))"), {"d": districts}).scalar()
    if not kept:
        conn.execute(text("TRUNCATE walk_edge, walk_node"))
        return False
    conn.execute(text(
        "WITH gone AS (DELETE FROM walk_edge WHERE district_code = ANY(:d) "
        "RETURNING source, target), ends AS (SELECT source AS id FROM gone UNION "
        "SELECT target FROM gone) "
        "DELETE FROM walk_node n USING ends WHERE n.id = ends.id AND NOT EXISTS "
        "(SELECT 1 FROM walk_edge e WHERE e.source = n.id OR e.target = n.id)"),
        {"d": districts})
    return True


def match_nodes(conn: Connection, nodes: pd.DataFrame, points: np.ndarray
                ) -> tuple[pd.DataFrame, dict[int, int]]:
    """(nodes to insert, file id -> stored id) for a file's walk nodes when other districts'
    nodes are kept: coinciding nodes reuse the kept ids, the others get ids past them."""
    xy = np.round(shapely.get_coordinates(points), ROUND)
    minx, miny = xy.min(axis=0) - 1e-4
    maxx, maxy = xy.max(axis=0) + 1e-4
    kept = conn.execute(text(
        "SELECT id, ST_X(geom), ST_Y(geom) FROM walk_node "
        "WHERE geom && ST_MakeEnvelope(:a, :b, :c, :d, 4326)"),
        {"a": float(minx), "b": float(miny), "c": float(maxx), "d": float(maxy)}).all()
    at = {(round(x, ROUND), round(y, ROUND)): int(i) for i, x, y in kept}
    top = int(conn.execute(text("SELECT coalesce(max(id), 0) FROM walk_node")).scalar_one())
    ids = nodes["id"].to_numpy(np.int64)
    mapping: dict[int, int] = {}
    fresh = np.ones(len(ids), dtype=bool)
    for k, (x, y) in enumerate(xy.tolist()):
        hit = at.get((x, y))
        if hit is not None:
            mapping[int(ids[k])] = hit
            fresh[k] = False
    base = top + 1 - int(ids[fresh].min()) if fresh.any() else 0
    for j in np.flatnonzero(fresh).tolist():
        mapping[int(ids[j])] = int(ids[j]) + base
    out = nodes[fresh].copy()
    out["id"] = ids[fresh] + base
    return out, mapping


def derive_parents(conn: Connection, gen: int, districts: set[str], given: set[str]) -> int:
    """Re-derive the geometry of current city/province rows marked ``derived`` whose districts
    changed (and that the file did not give): close them and insert the union of their current
    districts as a new version in generation ``gen``. Returns the rows re-derived."""
    prefixes = sorted({d[:4] for d in districts} | {d[:2] for d in districts})
    rows = conn.execute(text(
        "SELECT code, name FROM area WHERE generation_high IS NULL "
        "AND level IN ('city', 'province') AND code = ANY(:p) AND NOT (code = ANY(:given)) "
        "AND coalesce((properties->>'derived')::boolean, false) AND generation_low < :g"),
        {"p": prefixes, "given": sorted(given), "g": gen}).all()
    prev = conn.execute(text("SELECT max(id) FROM generation WHERE id < :g"), {"g": gen}).scalar()
    for code, name in rows:
        conn.execute(text(
            "UPDATE area SET generation_high = :prev WHERE code = :c AND generation_high IS NULL"),
            {"prev": prev, "c": code})
        insert_derived(conn, code, name, gen)
    return len(rows)


def insert_derived(conn: Connection, code: str, name: str | None, gen: int) -> None:
    """Insert a city (4 digits) or province (2 digits) row whose geometry is the union of the
    current districts under its code (``properties.derived = true``); none if it has none."""
    level = "city" if len(code) == 4 else "province"
    conn.execute(text(
        "INSERT INTO area (level, code, parent_code, name, geom, generation_low, properties) "
        "SELECT :level, :c, :parent, :name, "
        "ST_Multi(ST_CollectionExtract(ST_MakeValid(ST_Union(geom)), 3)), :g, "
        "CAST('{\"derived\": true}' AS jsonb) FROM area WHERE level = 'district' "
        "AND generation_high IS NULL AND left(code, :n) = :c HAVING count(*) > 0"),
        {"level": level, "c": code, "parent": code[:2] if level == "city" else None,
         "name": name or "", "g": gen, "n": len(code)})
