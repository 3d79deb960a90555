"""Coverage of buildings by service circles: who is covered, by which stations, and the gaps.

A building is covered when its location (EPSG:4326 point) lies in a circle of the chosen tier
(``ST_Intersects``). The point-in-circle join runs in shapely (an STRtree of building points,
queried with prepared circles, in threads); one row per building (its sorted station ids and
kinds) is COPYed in, and every sum runs in PostGIS.
Residents and households are summed per grid, community (first 12 digits of the grid code) and
street (first 9).
"""

from __future__ import annotations

import io
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import shapely
from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.circles.runs import (
    CircleSettings,
    finish_run,
    get_run,
    latest_run,
    read_copy,
    start_run,
)
from geo.core.errors import InvalidInput, Problem

log = logging.getLogger(__name__)

def _hits(
    conn: Connection, circles_run_id: int, tier: float, workers: int
) -> tuple[np.ndarray, pd.DataFrame]:
    """Every building id, and (building_id, station_id) for each building point in a circle of
    ``tier`` (m).

    ``ST_Intersects`` semantics (a point on the boundary counts), evaluated in shapely: an
    STRtree of the building points (EPSG:4326, as stored) queried with each prepared circle.
    Measured on the bench city (5,000 circles, 500,000 buildings): ~6x faster than the same
    join in PostGIS, whose net-shaped circles have bounding boxes ~8x their hits.
    """
    rows = conn.execute(
        text("SELECT station_id, ST_AsBinary(geom) FROM service_circle "
             "WHERE run_id = :r AND tier_m = :t ORDER BY id"),
        {"r": circles_run_id, "t": tier},
    ).all()
    pts = read_copy(conn, "SELECT id, ST_X(location), ST_Y(location) FROM building",
                    ["id", "x", "y"])
    if not rows or pts.empty:
        return pts["id"].to_numpy(np.int64), pd.DataFrame(
            {"building_id": [], "station_id": []}, dtype="int64")
    stations = np.array([r[0] for r in rows], dtype=np.int64)
    polys = shapely.from_wkb([bytes(r[1]) for r in rows])
    tree = shapely.STRtree(shapely.points(pts["x"].to_numpy(), pts["y"].to_numpy()))
    tree.query(polys[0])  # GEOS builds the tree on the first query: build it before the threads

    def query(part: np.ndarray) -> np.ndarray:
        shapely.prepare(polys[part])
        return tree.query(polys[part], predicate="intersects")

    parts = np.array_split(np.arange(len(polys)), max(1, workers))
    with ThreadPoolExecutor(max(1, workers)) as pool:
        found = list(pool.map(query, parts))
    poly = np.concatenate([p[f[0]] for p, f in zip(parts, found, strict=True)])
    point = np.concatenate([f[1] for f in found])
    ids = pts["id"].to_numpy(np.int64)
    return ids, pd.DataFrame({"building_id": ids[point], "station_id": stations[poly]})


def _coverage_text(
    run_id: int, buildings: np.ndarray, hits: pd.DataFrame, kind_of: dict[int, str]
) -> str:
    """``building_coverage`` rows in COPY text format: one per building, its sorted distinct
    station ids and kinds (``{}`` when uncovered)."""
    h = hits.drop_duplicates().sort_values(["building_id", "station_id"])
    b, s = h["building_id"].to_numpy(), h["station_id"].to_numpy()
    starts = np.nonzero(np.r_[True, b[1:] != b[:-1]])[0] if len(b) else np.zeros(0, int)
    cells: dict[int, str] = {}
    for i0, i1 in zip(starts, np.r_[starts[1:], len(b)], strict=True):
        st = s[i0:i1].tolist()
        kinds = ",".join(f'"{k}"' for k in sorted({kind_of[x] for x in st}))
        cells[int(b[i0])] = "t\t{" + ",".join(map(str, st)) + "}\t{" + kinds + "}"
    none = "f\t{}\t{}"
    return "".join(f"{run_id}\t{i}\t{cells.get(i, none)}\n" for i in buildings.tolist())


LEVEL_KEY = {"grid": "b.grid_code", "community": "left(b.grid_code, 12)",
             "street": "left(b.grid_code, 9)", "district": "left(b.grid_code, 6)",
             "city": "left(b.grid_code, 4)"}


def run_coverage(
    conn: Connection,
    settings: CircleSettings,
    *,
    circles_run_id: int | None = None,
    tier_m: float | None = None,
) -> int:
    """Cover every building with the circles of ``circles_run_id`` (latest) at ``tier_m`` (m)."""
    cr = circles_run_id or latest_run(conn, "circles")
    run = get_run(conn, cr, "circles")
    tier = float(tier_m if tier_m is not None else settings.coverage_tier_m)
    if tier not in [float(t) for t in run["params"].get("tiers_m", [])]:
        raise InvalidInput(
            f"circles run {cr} has no {tier} m tier",
            [Problem(f"choose one of {run['params'].get('tiers_m')}", field="tier_m")],
        )
    run_id = start_run(conn, "coverage", {"circles_run_id": cr, "tier_m": tier}, cr)
    t0 = time.perf_counter()
    buildings, hits = _hits(conn, cr, tier, settings.circle_parallel_workers)
    join_s = time.perf_counter() - t0
    kind_of = dict(conn.execute(text("SELECT id, kind FROM station")).all())
    rows = _coverage_text(run_id, buildings, hits, kind_of)
    with conn.connection.driver_connection.cursor() as cur:
        cur.copy_expert("COPY building_coverage (run_id, building_id, covered, station_ids, kinds)"
                        " FROM STDIN", io.StringIO(rows))
    write_s = time.perf_counter() - t0 - join_s
    totals = conn.execute(
        text(
            "SELECT count(*) AS buildings, count(*) FILTER (WHERE bc.covered) AS covered,"
            " coalesce(sum(b.residents), 0) AS residents,"
            " coalesce(sum(b.residents) FILTER (WHERE bc.covered), 0) AS residents_covered,"
            " coalesce(sum(b.households), 0) AS households,"
            " coalesce(sum(b.households) FILTER (WHERE bc.covered), 0) AS households_covered"
            " FROM building_coverage bc JOIN building b ON b.id = bc.building_id"
            " WHERE bc.run_id = :r"
        ),
        {"r": run_id},
    ).mappings().one()
    summary = {k: int(v) for k, v in totals.items()}
    summary["join_s"] = round(join_s, 3)
    summary["write_s"] = round(write_s, 3)
    summary["kind_shares"] = kind_shares(conn, settings)
    finish_run(conn, run_id, summary)
    return run_id


def coverage_by_level(conn: Connection, run_id: int, level: str) -> list[dict[str, Any]]:
    """Residents and households, total and covered, per grid, community, street, district or
    city."""
    if level not in LEVEL_KEY:
        raise InvalidInput("bad level", [Problem("grid, community, street, district or city",
                                                 field="level")])
    get_run(conn, run_id, "coverage")
    rows = conn.execute(
        text(
            f"SELECT {LEVEL_KEY[level]} AS code, count(*) AS buildings,"
            " count(*) FILTER (WHERE bc.covered) AS buildings_covered,"
            " sum(b.residents) AS residents,"
            " coalesce(sum(b.residents) FILTER (WHERE bc.covered), 0) AS residents_covered,"
            " sum(b.households) AS households,"
            " coalesce(sum(b.households) FILTER (WHERE bc.covered), 0) AS households_covered"
            " FROM building_coverage bc JOIN building b ON b.id = bc.building_id"
            " WHERE bc.run_id = :r GROUP BY 1 ORDER BY 1"
        ),
        {"r": run_id},
    ).mappings()
    out = []
    for r in rows:
        d = {k: (v if k == "code" else int(v or 0)) for k, v in r.items()}
        d["share_residents_covered"] = (
            round(d["residents_covered"] / d["residents"], 4) if d["residents"] else None
        )
        out.append(d)
    return out


def kind_shares(conn: Connection, settings: CircleSettings) -> list[dict[str, Any]]:
    """For each station kind, the share of communities and of streets holding one, vs targets.

    A station belongs to its ``community_code``, or, lacking one, to the community it lies in.
    """
    rows = conn.execute(
        text(
            """
            WITH sc AS (
                SELECT s.kind, coalesce(s.community_code, a.code) AS community
                FROM station s LEFT JOIN area_current a
                  ON s.community_code IS NULL AND a.level = 'community'
                 AND ST_Intersects(a.geom, s.location)
            ), n AS (
                SELECT count(*) FILTER (WHERE level = 'community') AS communities,
                       count(*) FILTER (WHERE level = 'street') AS streets
                FROM area_current
            )
            SELECT k.code AS kind,
                   count(DISTINCT sc.community) FILTER (WHERE sc.community IN
                       (SELECT code FROM area_current WHERE level = 'community'))
                     AS communities_with,
                   count(DISTINCT left(sc.community, 9)) FILTER (WHERE left(sc.community, 9) IN
                       (SELECT code FROM area_current WHERE level = 'street')) AS streets_with,
                   max(n.communities) AS communities, max(n.streets) AS streets
            FROM station_kind k LEFT JOIN sc ON sc.kind = k.code CROSS JOIN n
            GROUP BY k.code ORDER BY k.code
            """
        )
    ).mappings()
    out = []
    for r in rows:
        c, s = int(r["communities"] or 0), int(r["streets"] or 0)
        target = settings.kind_targets.get(r["kind"], {})
        cs = round(r["communities_with"] / c, 4) if c else None
        ss = round(r["streets_with"] / s, 4) if s else None
        item = {
            "kind": r["kind"], "communities_with": int(r["communities_with"]), "communities": c,
            "community_share": cs, "streets_with": int(r["streets_with"]), "streets": s,
            "street_share": ss,
        }
        if target:
            item["community_target"] = target.get("community")
            item["street_target"] = target.get("street")
            item["meets_targets"] = bool(
                (cs or 0) >= target.get("community", 0) and (ss or 0) >= target.get("street", 0)
            )
        out.append(item)
    return out


UNCOVERED_SQL = """
SELECT b.id, b.code, b.name, b.grid_code, b.residents, b.households, b.location AS geometry
FROM building_coverage bc JOIN building b ON b.id = bc.building_id
WHERE bc.run_id = :r AND NOT bc.covered ORDER BY b.id LIMIT :n
"""


def uncovered_geojson(conn: Connection, run_id: int, limit: int = 100_000) -> dict[str, Any]:
    """Uncovered buildings as an RFC 7946 FeatureCollection (points, lon/lat WGS 84)."""
    get_run(conn, run_id, "coverage")
    return conn.execute(
        text(
            "SELECT json_build_object('type', 'FeatureCollection', 'features',"
            " coalesce(json_agg(json_build_object('type', 'Feature', 'id', u.id,"
            "  'geometry', ST_AsGeoJSON(u.geometry, 7)::json, 'properties',"
            "  json_build_object('code', u.code, 'name', u.name, 'grid_code', u.grid_code,"
            "   'residents', u.residents, 'households', u.households))), '[]'::json))"
            f" FROM ({UNCOVERED_SQL}) u"
        ),
        {"r": run_id, "n": limit},
    ).scalar_one()


def export_uncovered(conn: Connection, run_id: int, path: Path) -> int:
    """Write uncovered buildings to GeoJSON (.geojson/.json) or GeoPackage (.gpkg); return count."""
    import geopandas as gpd

    get_run(conn, run_id, "coverage")
    gdf = gpd.read_postgis(
        text(UNCOVERED_SQL), conn, geom_col="geometry", params={"r": run_id, "n": 10**9}
    )
    suffix = Path(path).suffix.lower()
    if suffix == ".gpkg":
        gdf.to_file(path, driver="GPKG", layer="uncovered_building")
    elif suffix in (".geojson", ".json"):
        gdf.to_file(path, driver="GeoJSON")
    else:
        raise InvalidInput("unknown export format", [Problem("use .geojson or .gpkg", "path")])
    return len(gdf)
