"""Walking service circles (5分钟服务圈) from every station, computed in pgRouting.

Method (all set-based SQL, metres in the district's metric CRS, results stored in EPSG:4326):

1. Each station is snapped to its nearest usable walk edge (``pid, edge_id, fraction``).
   Edges that cross a barrier (river, railway, arterial) are unusable unless they are a
   crossing, bridge or tunnel, so the network only joins two banks where a crossing exists.
2. Stations are batched by square cells; one ``pgr_withPointsDD`` call per batch, undirected,
   ``driving_side => 'b'``, ``details => false``, from all the batch's points at once, on the
   edges inside the batch's box expanded by the largest tier (pgRouting reads its whole edge
   query every call, so the box keeps each call small). The walking budget of a station is the
   tier minus its snap distance.
3. Reached pieces: for every edge touching a reached node, the part within the remaining budget
   from each end (``ST_LineSubstring``; the whole edge when the two parts meet), plus the part
   of the station's own edge within the budget either side of the snapped point.
4. The circle is the pieces buffered by ``circle_buffer_m``: one ``ST_Buffer`` of the
   ``ST_LineMerge``-d pieces (merging chains first makes the buffer ~10x faster than buffering
   the raw pieces, and far faster than a union of per-piece buffers), evaluated in a parallel
   scan. Where a circle touches a barrier, the barrier area is cut out and any part left with
   no reached piece in it is dropped: a buffer never jumps a river. Optionally clipped to the
   station's community or street.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.circles_runs import CircleSettings, finish_run, metric_srid, start_run
from geo.errors import InvalidInput, Problem

log = logging.getLogger(__name__)

BLOCKED_SQL = """
CREATE TEMP TABLE _cs_blocked ON COMMIT DROP AS
SELECT DISTINCT e.id AS edge_id
FROM walk_edge e
JOIN (SELECT ST_Subdivide(geom, 64) AS geom FROM barrier WHERE kind = ANY(:kinds)) b
  ON e.geom && b.geom AND ST_Crosses(e.geom, b.geom)
WHERE NOT e.is_crossing
  AND e.road_class NOT IN ('crossing', 'bridge', 'tunnel');
CREATE UNIQUE INDEX ON _cs_blocked (edge_id);
ANALYZE _cs_blocked;
"""

SNAP_SQL = """
CREATE TEMP TABLE _cs_station ON COMMIT DROP AS
SELECT s.id AS station_id, s.kind, s.community_code, n.edge_id, n.fraction, n.snap_m,
       dense_rank() OVER (ORDER BY floor(ST_X(ST_Transform(s.location, :srid)) / :cell),
                                   floor(ST_Y(ST_Transform(s.location, :srid)) / :cell))
         AS batch_id,
       ST_Transform(s.location, :srid) AS geom_m
FROM station s
CROSS JOIN LATERAL (
    SELECT e.id AS edge_id, ST_LineLocatePoint(e.geom, s.location) AS fraction,
           ST_Distance(e.geom::geography, s.location::geography) AS snap_m
    FROM walk_edge e
    WHERE NOT EXISTS (SELECT 1 FROM _cs_blocked x WHERE x.edge_id = e.id)
    ORDER BY e.geom <-> s.location LIMIT 1
) n
WHERE n.snap_m <= :snap_max AND (CAST(:ids AS bigint[]) IS NULL OR s.id = ANY(:ids));
CREATE INDEX ON _cs_station (batch_id);
CREATE TEMP TABLE _cs_batch ON COMMIT DROP AS
SELECT batch_id, count(*) AS n,
       ST_Envelope(ST_Transform(ST_SetSRID(ST_Expand(ST_Extent(geom_m), :reach)::geometry, :srid),
                            4326))
         AS bbox
FROM _cs_station GROUP BY batch_id;
CREATE TEMP TABLE _cs_dd (station_id bigint, node bigint, d float8) ON COMMIT DROP;
"""

# pgRouting drops a point at fraction 0 or 1 (it is the vertex), so keep it just inside.
# Only integers (batch ids) are written into the inner SQL; everything else comes from tables.
EDGES_SQL = (
    "SELECT e.id, e.source, e.target, e.length_m AS cost, e.length_m AS reverse_cost "
    "FROM walk_edge e, _cs_batch b WHERE b.batch_id = {batch} AND e.geom && b.bbox "
    "AND NOT EXISTS (SELECT 1 FROM _cs_blocked x WHERE x.edge_id = e.id)"
)
POINTS_SQL = (
    "SELECT station_id AS pid, edge_id, LEAST(GREATEST(fraction, 1e-7), 1 - 1e-7) AS fraction, "
    "'b'::char AS side "
    "FROM _cs_station WHERE batch_id = {batch}"
)
DD_SQL = """
INSERT INTO _cs_dd
SELECT -d.start_vid, d.node, d.agg_cost + s.snap_m
FROM pgr_withPointsDD(:edges, :points,
        (SELECT array_agg(-station_id) FROM _cs_station WHERE batch_id = :batch),
        :reach, directed => false, driving_side => 'b', details => false) d
JOIN _cs_station s ON s.station_id = -d.start_vid
WHERE d.node > 0 AND d.agg_cost + s.snap_m <= :reach
"""

PIECES_SQL = """
CREATE TEMP TABLE _cs_edge ON COMMIT DROP AS
SELECT DISTINCT e.id, ST_Transform(e.geom, :srid) AS geom_m
FROM walk_edge e JOIN _cs_batch b ON e.geom && b.bbox;
CREATE UNIQUE INDEX ON _cs_edge (id);
ANALYZE _cs_edge;
CREATE TEMP TABLE _cs_piece ON COMMIT DROP AS
WITH ends AS (
    SELECT d.station_id, e.id AS edge_id, d.d AS du, NULL::float8 AS dv
    FROM _cs_dd d JOIN walk_edge e ON e.source = d.node
    UNION ALL
    SELECT d.station_id, e.id, NULL, d.d FROM _cs_dd d JOIN walk_edge e ON e.target = d.node
), per_edge AS (
    SELECT station_id, edge_id, min(du) AS du, min(dv) AS dv FROM ends
    WHERE NOT EXISTS (SELECT 1 FROM _cs_blocked x WHERE x.edge_id = ends.edge_id)
    GROUP BY station_id, edge_id
), fr AS (
    SELECT p.station_id, p.edge_id, t.tier,
           CASE WHEN p.du IS NULL OR p.du >= t.tier THEN 0
                ELSE LEAST(1, (t.tier - p.du) / e.length_m) END AS a,
           CASE WHEN p.dv IS NULL OR p.dv >= t.tier THEN 0
                ELSE LEAST(1, (t.tier - p.dv) / e.length_m) END AS b
    FROM per_edge p JOIN walk_edge e ON e.id = p.edge_id
    CROSS JOIN unnest(CAST(:tiers AS float8[])) AS t(tier)
), ranges AS (
    SELECT station_id, edge_id, tier, 0::float8 AS lo, 1::float8 AS hi FROM fr WHERE a + b >= 1
    UNION ALL
    SELECT station_id, edge_id, tier, 0, a FROM fr WHERE a + b < 1 AND a > 0
    UNION ALL
    SELECT station_id, edge_id, tier, 1 - b, 1 FROM fr WHERE a + b < 1 AND b > 0
    UNION ALL
    SELECT s.station_id, s.edge_id, t.tier,
           GREATEST(0, s.fraction - (t.tier - s.snap_m) / e.length_m),
           LEAST(1, s.fraction + (t.tier - s.snap_m) / e.length_m)
    FROM _cs_station s JOIN walk_edge e ON e.id = s.edge_id
    CROSS JOIN unnest(CAST(:tiers AS float8[])) AS t(tier)
    WHERE t.tier > s.snap_m
)
SELECT r.station_id, r.tier, r.edge_id, r.lo, r.hi,
       CASE WHEN r.lo = 0 AND r.hi = 1 THEN e.geom_m
            ELSE ST_LineSubstring(e.geom_m, r.lo, r.hi) END AS geom_m
FROM ranges r JOIN _cs_edge e ON e.id = r.edge_id
WHERE r.hi > r.lo;
"""

# The buffers run in a parallel scan of an unlogged work table (temp tables cannot be read by
# parallel workers); the table name holds only the run id.
LINES_SQL = """
CREATE UNLOGGED TABLE circle_work_{run} AS
SELECT station_id, tier, count(*) AS pieces, ST_LineMerge(ST_Collect(geom_m)) AS lines_m
FROM _cs_piece GROUP BY station_id, tier;
ANALYZE circle_work_{run};
"""
CIRCLE_SQL = """
CREATE TEMP TABLE _cs_circle ON COMMIT DROP AS
SELECT station_id, tier, pieces, lines_m, ST_Buffer(lines_m, :buf, :style) AS geom_m
FROM circle_work_{run};
"""
PARALLEL_SQL = """
SET LOCAL max_parallel_workers_per_gather = {workers};
SET LOCAL parallel_setup_cost = 0;
SET LOCAL parallel_tuple_cost = 0;
SET LOCAL min_parallel_table_scan_size = 0;
"""

BARRIER_CUT_SQL = """
CREATE TEMP TABLE _cs_barrier ON COMMIT DROP AS
SELECT ST_Subdivide(CASE WHEN ST_Dimension(geom) = 2 THEN ST_Transform(geom, :srid)
                         ELSE ST_Buffer(ST_Transform(geom, :srid), 0.5, 'quad_segs=1') END,
                    32) AS geom_m
FROM barrier WHERE kind = ANY(:kinds);
CREATE INDEX ON _cs_barrier USING gist (geom_m);
WITH hit AS (
    SELECT c.station_id, c.tier, ST_Difference(c.geom_m, ST_Union(b.geom_m)) AS rest
    FROM _cs_circle c JOIN _cs_barrier b ON ST_Intersects(c.geom_m, b.geom_m)
    GROUP BY c.station_id, c.tier, c.geom_m
), kept AS (
    SELECT h.station_id, h.tier, ST_Union(p.geom) AS geom_m
    FROM hit h CROSS JOIN LATERAL ST_Dump(h.rest) p
    JOIN _cs_circle c ON c.station_id = h.station_id AND c.tier = h.tier
    WHERE ST_DWithin(p.geom, c.lines_m, 1.0)
    GROUP BY h.station_id, h.tier
)
UPDATE _cs_circle c SET geom_m = k.geom_m FROM kept k
WHERE k.station_id = c.station_id AND k.tier = c.tier;
"""

CLIP_SQL = """
UPDATE _cs_circle c SET geom_m = ST_Intersection(c.geom_m, ST_Transform(a.geom, :srid))
FROM _cs_station s, area_current a
WHERE s.station_id = c.station_id AND a.level = :level
  AND a.code = left(s.community_code, CASE WHEN :level = 'street' THEN 9 ELSE 12 END)
"""

INSERT_SQL = """
INSERT INTO service_circle (run_id, station_id, tier_m, tier_min, reached_pieces, geom)
SELECT :run, station_id, tier, tier / :speed, pieces,
       ST_Multi(ST_CollectionExtract(ST_Transform(geom_m, 4326), 3))
FROM _cs_circle WHERE NOT ST_IsEmpty(geom_m)
"""


def _check_tiers(tiers: list[float]) -> list[float]:
    bad = [t for t in tiers if not (0 < float(t) <= 5000)]
    if not tiers or bad:
        raise InvalidInput(
            "tiers must be network distances in metres in (0, 5000]",
            [Problem(f"bad tier {t!r}", field="tiers_m") for t in bad or [None]],
        )
    return sorted({float(t) for t in tiers})


def _drop_temp(conn: Connection) -> None:
    conn.execute(
        text("DROP TABLE IF EXISTS _cs_edge, _cs_piece, _cs_circle, _cs_dd, _cs_batch, "
             "_cs_station, _cs_blocked, _cs_barrier")
    )


def _search(
    conn: Connection,
    settings: CircleSettings,
    reach: float,
    station_ids: list[int] | None,
    srid: int,
    progress: bool,
) -> dict[str, float]:
    """Snap stations, batch them, and fill ``_cs_dd`` (station, node, metres) via pgRouting."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    conn.execute(text(BLOCKED_SQL), {"kinds": list(settings.circle_barrier_kinds)})
    conn.execute(
        text(SNAP_SQL),
        {"srid": srid, "cell": settings.circle_batch_cell_m, "snap_max": settings.circle_snap_max_m,
         "reach": reach + settings.circle_buffer_m, "ids": station_ids},
    )
    batches = [r[0] for r in conn.execute(text("SELECT batch_id FROM _cs_batch ORDER BY 1"))]
    timings["snap_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(batches), desc="isochrones", unit="batch")
    for b in batches:
        conn.execute(
            text(DD_SQL),
            {"edges": EDGES_SQL.format(batch=int(b)), "points": POINTS_SQL.format(batch=int(b)),
             "batch": int(b), "reach": reach},
        )
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    conn.execute(text("CREATE INDEX ON _cs_dd (node); ANALYZE _cs_dd;"))
    timings["search_s"] = time.perf_counter() - t1
    timings["batches"] = len(batches)
    return timings


def station_reach(
    conn: Connection, settings: CircleSettings, station_ids: list[int], reach_m: float
) -> dict[int, dict[int, float]]:
    """Network distance (m) from each station to every node within ``reach_m``, via pgRouting.

    The same snapping and search as the circles; {station_id: {node_id: metres}}.
    """
    _search(conn, settings, reach_m, station_ids, metric_srid(conn), False)
    out: dict[int, dict[int, float]] = {}
    for sid, node, d in conn.execute(text("SELECT station_id, node, d FROM _cs_dd")):
        out.setdefault(int(sid), {})[int(node)] = float(d)
    _drop_temp(conn)
    return out


def build_circles(
    conn: Connection,
    settings: CircleSettings,
    *,
    tiers_m: list[float] | None = None,
    clip: str | None = None,
    station_ids: list[int] | None = None,
    progress: bool = False,
) -> int:
    """Compute the service circles of every station (or ``station_ids``); return the run id.

    Tiers are walking network distances in metres; circles are stored in EPSG:4326.
    """
    tiers = _check_tiers(tiers_m or settings.circle_tiers_m)
    clip = clip if clip is not None else settings.circle_clip
    if clip not in (None, "", "none", "community", "street"):
        raise InvalidInput("bad clip", [Problem("must be community, street or none", "clip")])
    clip = None if clip in ("", "none") else clip
    params: dict[str, Any] = {
        "tiers_m": tiers, "buffer_m": settings.circle_buffer_m, "clip": clip,
        "barrier_kinds": settings.circle_barrier_kinds,
        "walking_speed_m_per_min": settings.walking_speed_m_per_min,
        "batch_cell_m": settings.circle_batch_cell_m, "station_ids": station_ids,
    }
    run_id = start_run(conn, "circles", params)
    srid = metric_srid(conn)
    kinds = list(settings.circle_barrier_kinds)
    timings = _search(conn, settings, max(tiers), station_ids, srid, progress)
    t2 = time.perf_counter()
    conn.execute(text(PIECES_SQL), {"tiers": tiers, "srid": srid})
    timings["pieces_s"] = time.perf_counter() - t2
    style = f"quad_segs={int(settings.circle_quad_segs)}"
    t3 = time.perf_counter()
    conn.execute(text(LINES_SQL.format(run=int(run_id))))
    if settings.circle_parallel_workers > 0:
        conn.execute(text(PARALLEL_SQL.format(workers=int(settings.circle_parallel_workers))))
    conn.execute(
        text(CIRCLE_SQL.format(run=int(run_id))),
        {"buf": settings.circle_buffer_m, "style": style},
    )
    conn.execute(text(f"DROP TABLE circle_work_{int(run_id)}"))
    timings["buffer_s"] = time.perf_counter() - t3
    t3 = time.perf_counter()
    if kinds:
        conn.execute(text(BARRIER_CUT_SQL), {"srid": srid, "kinds": kinds})
    if clip:
        conn.execute(text(CLIP_SQL), {"srid": srid, "level": clip})
    timings["cut_clip_s"] = time.perf_counter() - t3
    n = conn.execute(
        text(INSERT_SQL), {"run": run_id, "speed": settings.walking_speed_m_per_min}
    ).rowcount
    timings["polygon_s"] = time.perf_counter() - t2
    snapped = conn.execute(text("SELECT count(*) FROM _cs_station")).scalar_one()
    total = conn.execute(
        text("SELECT count(*) FROM station WHERE CAST(:ids AS bigint[]) IS NULL OR id = ANY(:ids)"),
        {"ids": station_ids},
    ).scalar_one()
    summary = {
        "stations": total, "stations_snapped": snapped, "stations_skipped": total - snapped,
        "circles": n, "tiers_m": tiers,
        **{k: round(v, 3) for k, v in timings.items()},
    }
    _drop_temp(conn)
    finish_run(conn, run_id, summary)
    log.info("circles run %s: %s", run_id, summary)
    return run_id


def circles_geojson(
    conn: Connection, run_id: int, *, tier_m: float | None = None, limit: int = 10000
) -> dict[str, Any]:
    """The run's circles as an RFC 7946 FeatureCollection (lon, lat, WGS 84)."""
    from geo.circles_runs import get_run

    get_run(conn, run_id, "circles")
    fc = conn.execute(
        text(
            "SELECT json_build_object('type', 'FeatureCollection', 'features', "
            " coalesce(json_agg(json_build_object('type', 'Feature', 'id', c.id,"
            "  'geometry', ST_AsGeoJSON(c.geom, 6)::json,"
            "  'properties', json_build_object('station_id', c.station_id,"
            "   'station_code', s.code, 'kind', s.kind, 'tier_m', c.tier_m,"
            "   'tier_min', c.tier_min))), '[]'::json))"
            " FROM (SELECT * FROM service_circle WHERE run_id = :r"
            "   AND (CAST(:t AS float8) IS NULL OR tier_m = :t) ORDER BY id LIMIT :n) c"
            " JOIN station s ON s.id = c.station_id"
        ),
        {"r": run_id, "t": tier_m, "n": limit},
    ).scalar_one()
    return fc
