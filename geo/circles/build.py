"""Walking service circles (5分钟服务圈) from every station, computed in pgRouting.

Method (metres in the district's metric CRS, results stored in EPSG:4326):

1. Each station is snapped (SQL) to its nearest usable walk edge (``pid, edge_id, fraction``).
   Edges that cross a barrier (river, railway, arterial) are unusable unless they are a
   crossing, bridge or tunnel, so the network only joins two banks where a crossing exists.
2. Stations are batched by square cells; one ``pgr_withPointsDD`` call per batch, undirected,
   ``driving_side => 'b'``, ``details => false``, from all the batch's points at once, on the
   edges inside the batch's box expanded by the largest tier (pgRouting reads its whole edge
   query every call, so the box keeps each call small). The walking budget of a station is the
   tier minus its snap distance.
3. Reached pieces: for every edge touching a reached node, the part within the remaining
   budget from each end (the whole edge when the two parts meet), plus the part of the
   station's own edge within the budget either side of the snapped point; overlapping parts of
   one edge are united, so the pieces are disjoint and meet bit for bit. Raster: one numba loop
   gives them already sampled (``geo.circles.seeds``); exact: numpy (``geo.circles.geometry``).
   The scipy search reads the usable edges with their geometry once; the polygons reuse them.
4. The circle is every point within ``circle_buffer_m`` of the pieces: by default a contour of
   the distance field on a ``circle_raster_cell_m`` grid (``geo.circles.raster``), or
   (``circle_polygon_method=exact``) one shapely buffer of the line-merged pieces. Where a
   circle touches a barrier, the barrier area is cut out and any part left with no reached
   piece in it is dropped: a circle never jumps a river. Steps 3-4 run over small chunks of
   circles in ``circle_parallel_workers`` forked processes while this one searches the next
   group of stations and COPYs finished chunks in. Optionally clipped to the station's
   community or street (SQL).

Measured (``bench.circles --runs real``, demo Helsinki, 162 circles): polygon phase / search
2.24 at load 1.0 (5.3 at load 2.0 with another tenant on one core; 2.7-3.9 for a second run
in a warm process), 8.0 ms per circle with numba's one-time start (``jit_s`` 0.54 s); before
this the ratio was 5.0-6.5 in the same session. Dense city, 15,000 circles: 43.7 s at load
1.8 (75 s before at load ~1).
"""
from __future__ import annotations

import io
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import shapely
from sqlalchemy import text
from sqlalchemy.engine import Connection
from tqdm import tqdm

from geo.circles.geometry import EdgeCoords
from geo.circles.pool import (
    CHUNK,
    Job,
    Network,
    Reach,
    process_pool,
    set_network,
    station_chunks,
    station_csv,
)
from geo.circles.runs import CircleSettings, claim_run, finish_run, metric_srid, read_copy
from geo.circles.seeds import EdgeSamples, warm
from geo.core.db import driver_connection
from geo.core.errors import InvalidInput, Problem

log = logging.getLogger(__name__)

# the walk edges crossing a barrier of :kinds that are not a crossing, bridge or tunnel (the
# WHERE clause ends the query: a caller may add ``AND ...`` on ``e``)
BLOCKED_SELECT = """
SELECT DISTINCT e.id AS edge_id
FROM walk_edge e
JOIN (SELECT ST_Subdivide(geom, 64) AS geom FROM barrier WHERE kind = ANY(:kinds)) b
  ON e.geom && b.geom AND ST_Crosses(e.geom, b.geom)
WHERE NOT e.is_crossing
  AND e.road_class NOT IN ('crossing', 'bridge', 'tunnel')
"""
BLOCKED_SQL = f"""
CREATE TEMP TABLE _cs_blocked ON COMMIT DROP AS {BLOCKED_SELECT};
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

OWN_SQL = "SELECT station_id, edge_id, fraction, snap_m FROM _cs_station"  # no bind values
# the usable edges inside the batches' boxes, in the metric CRS
EDGES_M_SQL = """
SELECT e.id, e.source, e.target, NULL, ST_AsHEXEWKB(ST_Transform(e.geom, {srid})) AS wkb
FROM walk_edge e
WHERE e.id IN (SELECT e2.id FROM walk_edge e2 JOIN _cs_batch b ON e2.geom && b.bbox)
  AND NOT EXISTS (SELECT 1 FROM _cs_blocked x WHERE x.edge_id = e.id)
ORDER BY e.id
"""
# lines widened: their union buffered once (~2x cheaper than uniting per-line buffers); the lines
# simplified by 0.5 m first and widened by 1 m on each side, so the strip still covers every
# original line 0.5 m on each side and a line ending on another still meets its strip: 1,199
# vertices instead of 1,899 on the demo, the barrier cut ~14 % cheaper
BARRIER_SQL = """
SELECT ST_AsBinary(ST_Union(g)) FROM (
  SELECT ST_Transform(geom, :srid) AS g FROM barrier
  WHERE kind = ANY(:kinds) AND ST_Dimension(geom) = 2
  UNION ALL
  SELECT ST_Buffer(ST_Union(ST_Simplify(ST_Transform(geom, :srid), 0.5, true)), 1.0, 'quad_segs=1')
  FROM barrier WHERE kind = ANY(:kinds) AND ST_Dimension(geom) < 2
) b
"""
# what the barrier union is made of, to know when it changed (a hash per row, then of the sorted
# hashes: ~1 ms on the demo against ~17 ms for the union, and no text the size of the table)
BARRIER_DIGEST_SQL = """
SELECT md5(string_agg(h, ',' ORDER BY h)) FROM (
  SELECT md5(kind || ':' || md5(ST_AsEWKB(geom))) AS h FROM barrier WHERE kind = ANY(:kinds)
) b
"""
_BARRIER_CACHE: dict[tuple[int, tuple[str, ...], str], bytes | None] = {}
_BARRIER_LOCK = threading.Lock()


def _barrier_wkb(conn: Connection, srid: int, kinds: tuple[str, ...]) -> bytes | None:
    """The barrier area of ``kinds`` (WKB, metric CRS ``srid``): ``BARRIER_SQL``'s union,
    made again only when the barriers' content changed (keyed by its digest, so one process
    serving several databases or a barrier edit never sees a stale union). Thread-safe."""
    digest = conn.execute(text(BARRIER_DIGEST_SQL), {"kinds": list(kinds)}).scalar()
    if digest is None:
        return None
    key = (int(srid), kinds, str(digest))
    with _BARRIER_LOCK:
        if key in _BARRIER_CACHE:
            return _BARRIER_CACHE[key]
        raw = conn.execute(text(BARRIER_SQL), {"srid": srid, "kinds": list(kinds)}).scalar()
        made = bytes(raw) if raw is not None else None
        if len(_BARRIER_CACHE) >= 8:
            _BARRIER_CACHE.clear()
        _BARRIER_CACHE[key] = made
        return made


# circles are stored in EPSG:4326; clipping intersects them with the stored area there
CLIP_SQL = """
UPDATE service_circle c
SET geom = ST_Multi(ST_CollectionExtract(ST_Intersection(c.geom, a.geom), 3))
FROM _cs_station s, area_current a
WHERE c.run_id = :run AND s.station_id = c.station_id AND a.level = :level
  AND a.code = left(s.community_code,
                   CASE :level WHEN 'district' THEN 6 WHEN 'street' THEN 9 ELSE 12 END);
DELETE FROM service_circle WHERE run_id = :run AND ST_IsEmpty(geom);
"""
COPY_SQL = ("COPY service_circle (run_id, station_id, tier_m, tier_min, reached_pieces, geom)"
            " FROM STDIN WITH (FORMAT csv)")


def check_tiers(tiers: list[float]) -> list[float]:
    """Tiers (m) sorted and unique; InvalidInput naming ``tiers_m`` unless all in (0, 5000]."""
    bad = [t for t in tiers if not (0 < float(t) <= 5000)]
    if not tiers or bad:
        raise InvalidInput(
            "tiers must be network distances in metres in (0, 5000]",
            [Problem(f"bad tier {t!r}", field="tiers_m") for t in bad]
            or [Problem("no tiers given", field="tiers_m")],
        )
    return sorted({float(t) for t in tiers})


def check_clip(clip: str | None) -> str | None:
    """'community', 'street', 'district' or None (also for '' and 'none': the circle follows
    the whole walking network, across district borders); InvalidInput otherwise."""
    if clip not in (None, "", "none", "community", "street", "district"):
        raise InvalidInput("bad clip", [Problem("must be community, street, district or none",
                                                "clip")])
    return None if clip in ("", "none") else clip


def _drop_temp(conn: Connection) -> None:
    conn.execute(
        text("DROP TABLE IF EXISTS _cs_dd, _cs_batch, _cs_station, _cs_blocked")
    )


def _search(
    conn: Connection,
    settings: CircleSettings,
    reach: float,
    station_ids: list[int] | None,
    srid: int,
    progress: bool,
) -> tuple[dict[str, float], Iterator[tuple[np.ndarray, pd.DataFrame]], Edges | None]:
    """Snap stations and search: per station, every node within ``reach`` (station, node,
    metres), with pgRouting (one call per batch, via ``_cs_dd``) or scipy in memory
    (``circle_search``); the seconds spent; and the usable edges the scipy search read (in
    the metric CRS ``srid``: the polygons reuse them), None with pgRouting."""
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
    if settings.circle_search == "scipy":
        edges = Edges.fetch(conn, USABLE_SQL.format(srid=int(srid)))
        timings["search_s"] = time.perf_counter() - t1
        timings["batches"] = len(batches)
        return timings, _search_scipy(conn, edges, reach, timings), edges
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
    everyone = read_copy(conn, OWN_SQL, ["station"] + ["edge", "frac", "snap"])["station"]
    return timings, iter([(everyone.to_numpy(np.int64),
                           read_copy(conn, "SELECT station_id, node, d FROM _cs_dd",
                                     ["station", "node", "d"]))]), None


# every usable edge, in the metric CRS (the scipy search and the polygons share it)
USABLE_SQL = """
SELECT e.id, e.source, e.target, e.length_m, ST_AsHEXEWKB(ST_Transform(e.geom, {srid}))
FROM walk_edge e
WHERE NOT EXISTS (SELECT 1 FROM _cs_blocked x WHERE x.edge_id = e.id)
ORDER BY e.id
"""


@dataclass
class Edges:
    """Usable walk edges sorted by id: end node ids, ``length_m`` (the search's cost) and
    the LineStrings in a metric CRS (m)."""

    id: np.ndarray
    source: np.ndarray
    target: np.ndarray
    length_m: np.ndarray
    geoms: np.ndarray

    @classmethod
    def fetch(cls, conn: Connection, query: str) -> Edges:
        """From ``query``'s rows (id, source, target, length_m or NULL, hex EWKB), by id."""
        e = read_copy(conn, query, ["id", "source", "target", "len", "wkb"])
        return cls(e["id"].to_numpy(np.int64), e["source"].to_numpy(np.int64),
                   e["target"].to_numpy(np.int64), e["len"].to_numpy(float),
                   shapely.from_wkb(e["wkb"].to_numpy()))
STATION_XY_SQL = ("SELECT station_id, edge_id, fraction, snap_m, ST_X(geom_m), ST_Y(geom_m) "
                  "FROM _cs_station ORDER BY batch_id, station_id")
SEARCH_CHUNK = 32  # stations per scipy call (its answer is a dense stations x nodes matrix)
SEARCH_GROUP = 400  # stations whose circles are built together (bounds the memory)


def _search_scipy(conn: Connection, e: Edges, reach: float,
                  timings: dict[str, float]) -> Iterator[tuple[np.ndarray, pd.DataFrame]]:
    """The same search as ``pgr_withPointsDD`` in memory: Dijkstra (scipy) over the usable
    edges (``length_m`` both ways) from one virtual node per snapped station, joined to its
    edge's ends by the snap distance plus the part of the edge; nodes within ``reach`` (m,
    snap included). Each call searches ``SEARCH_CHUNK`` stations (near one another: batch
    order) on the edges ``e`` whose box (metric CRS) meets the stations' box grown by the
    reach (1 % + 10 m spare for the projection's scale): a walk of ``reach`` metres never
    leaves it, so the answer is the whole network's. Yields station, node (walk node id),
    d (m) for ``SEARCH_GROUP`` stations at a time, adding its seconds to ``search_s``."""
    t0 = time.perf_counter()
    from scipy.sparse.csgraph import dijkstra

    from geo.circles.distances import sparse_graph

    st = read_copy(conn, STATION_XY_SQL, ["station", "edge", "frac", "snap", "x", "y"])
    m = len(e.id)
    ids, inv = np.unique(np.r_[e.source, e.target], return_inverse=True)
    ns = len(st)
    u, v, ln = inv[:m], inv[m:], e.length_m
    ex0, ey0, ex1, ey1 = shapely.bounds(e.geoms).T
    k = np.searchsorted(e.id, st["edge"].to_numpy())
    frac, snap = st["frac"].to_numpy(float), st["snap"].to_numpy(float)
    sx, sy = st["x"].to_numpy(float), st["y"].to_numpy(float)
    sid = st["station"].to_numpy(np.int64)
    grow = reach * 1.01 + 10.0
    timings["search_s"] += time.perf_counter() - t0
    for g0 in range(0, ns, SEARCH_GROUP):
        t1 = time.perf_counter()
        parts = []
        for c0 in range(g0, min(g0 + SEARCH_GROUP, ns), SEARCH_CHUNK):
            c1 = min(c0 + SEARCH_CHUNK, ns, g0 + SEARCH_GROUP)
            em = ((ex0 <= sx[c0:c1].max() + grow) & (ex1 >= sx[c0:c1].min() - grow)
                  & (ey0 <= sy[c0:c1].max() + grow) & (ey1 >= sy[c0:c1].min() - grow))
            loc, linv = np.unique(np.r_[u[em], v[em]], return_inverse=True)
            me, nl, cs = int(em.sum()), len(loc), c1 - c0
            lu, lv, ll = linv[:me], linv[me:], ln[em]
            kk = k[c0:c1]
            ok = em[kk]  # the station's own edge is in the box (unless it is beyond reach)
            pos = (np.cumsum(em) - 1)[kk[ok]]
            j = nl + np.nonzero(ok)[0]
            g = sparse_graph(np.r_[lu, lv, j, j], np.r_[lv, lu, lu[pos], lv[pos]],
                             np.r_[ll, ll, snap[c0:c1][ok] + frac[c0:c1][ok] * ll[pos],
                                   snap[c0:c1][ok] + (1 - frac[c0:c1][ok]) * ll[pos]],
                             nl + cs)
            d = dijkstra(g, directed=True, indices=nl + np.arange(cs), limit=reach)[:, :nl]
            r, c = np.nonzero(d <= reach)
            parts.append(pd.DataFrame({"station": sid[c0:c1][r], "node": ids[loc[c]],
                                       "d": d[r, c]}))
        timings["search_s"] += time.perf_counter() - t1
        yield sid[g0:g0 + SEARCH_GROUP], pd.concat(parts, ignore_index=True)


def _network(conn: Connection, settings: CircleSettings, tiers: list[float], srid: int,
             run_id: int, edges: Edges | None) -> tuple[Network, Job]:
    """The usable edges (read here unless the search did), their raster samples, the
    stations' snapped positions and the barrier (metric CRS ``srid``): what every chunk of
    the run works on."""
    own = read_copy(conn, OWN_SQL, ["station", "edge", "frac", "snap"])
    if edges is None:
        edges = Edges.fetch(conn, EDGES_M_SQL.format(srid=int(srid)))
    coords = EdgeCoords.from_geoms(edges.geoms)
    own["edge"] = np.searchsorted(edges.id, own["edge"].to_numpy())
    barrier = (_barrier_wkb(conn, srid, tuple(settings.circle_barrier_kinds))
               if settings.circle_barrier_kinds else None)
    job = Job(run_id, srid, settings.circle_polygon_method, settings.circle_raster_cell_m,
              settings.circle_buffer_m, settings.circle_quad_segs,
              settings.walking_speed_m_per_min, barrier)
    samples = (None if settings.circle_polygon_method == "exact" else
               EdgeSamples.build(coords, edges.source, edges.target,
                                 settings.circle_raster_cell_m))
    return Network(coords, edges.source, edges.target, shapely.length(edges.geoms), own,
                   np.asarray(tiers, float), samples), job


def _polygons(
    conn: Connection,
    settings: CircleSettings,
    tiers: list[float],
    srid: int,
    run_id: int,
    progress: bool,
    groups: Iterable[tuple[np.ndarray, pd.DataFrame]],
    stations: int,
    on_progress: Callable[[float], None] | None = None,
    edges: Edges | None = None,
) -> dict[str, float]:
    """Reached pieces -> buffered, barrier-cut circles, stored in ``service_circle`` (4326).

    ``groups``: the search's answer, per group of stations (their ids, and station, node,
    metres), so that memory stays bounded; ``stations`` in all. Pieces (per chunk of stations),
    polygons, the barrier cut and the transform to EPSG:4326 run over arrays in
    ``circle_parallel_workers`` processes while this one COPYs finished chunks in. Returns
    wall seconds per phase (``jit_s``: numba's one-time start in a fresh process, ~0 after;
    ``reach_fetch_s``: reading the network unless the search did, and its samples;
    ``pieces_s``: splitting the search's answer into chunks;
    ``polygon_s``: the rest of the loop, the search of the next group left out) and the
    workers' CPU seconds of pieces, merge, polygon ("buffer"), cut and store.
    """
    tj = time.perf_counter()
    if settings.circle_polygon_method != "exact":
        warm(settings.circle_raster_cell_m)
    t0 = time.perf_counter()
    net, job = _network(conn, settings, tiers, srid, run_id, edges)
    workers = max(1, settings.circle_parallel_workers)
    t = {"jit_s": t0 - tj, "reach_fetch_s": time.perf_counter() - t0, "pieces_s": 0.0,
         "polygon_s": 0.0, "copy_s": 0.0, "circles": 0, "pieces": 0, "merge_cpu_s": 0.0,
         "buffer_cpu_s": 0.0, "cut_cpu_s": 0.0, "store_cpu_s": 0.0, "pieces_cpu_s": 0.0}
    bar = tqdm(total=stations * len(tiers), desc="circles", unit="circle") if progress else None
    raw = driver_connection(conn)
    t["searching"] = t["done_st"] = 0.0
    # the helpers are forked after this: they inherit the network instead of receiving it
    set_network(net, job)
    # small chunks: the last one to finish decides the wall time
    size = max(1, min(CHUNK // len(tiers), -(-stations // (8 * workers))))
    pending: deque[Any] = deque()  # the helper processes' chunks, in order

    def store(result: tuple[str, int, dict[str, float]]) -> None:
        csv, count, spent = result
        tc = time.perf_counter()
        with raw.cursor() as cur:
            cur.copy_expert(COPY_SQL, io.StringIO(csv))
        t["circles"] += count
        t["copy_s"] += time.perf_counter() - tc
        t["pieces"] += int(spent.pop("pieces"))
        for k, v in spent.items():
            t[k.replace("_s", "_cpu_s")] += v
        if bar:
            bar.update(count)

    def collect(block: bool) -> None:
        while pending and (block or pending[0].done()):
            store(pending.popleft().result())

    def refill(it: Iterator[tuple[np.ndarray, pd.DataFrame]],
               todo: deque[tuple[np.ndarray, Reach]]) -> bool:
        """The next group's chunks into ``todo`` (False: none left); the search of the group
        runs here, timed apart (not polygon time)."""
        ts = time.perf_counter()
        members, dd = next(it, (None, None))
        if members is None:
            return False
        t2 = time.perf_counter()
        t["searching"] += t2 - ts
        todo.extend(station_chunks(members, dd, size))
        t["done_st"] += len(members)
        t["pieces_s"] += time.perf_counter() - t2
        if on_progress:
            on_progress(t["done_st"] / max(stations, 1))
        return True

    try:
        with process_pool(workers, stations * len(tiers)) as pool:
            t1 = time.perf_counter()
            it = iter(groups)
            todo: deque[tuple[np.ndarray, Reach]] = deque()
            while todo or refill(it, todo):
                if pool is None:
                    store(station_csv(job, *todo.popleft()))
                    continue
                # the whole group queued, so that the workers stay busy while this process
                # searches the next one; at most 8 chunks per worker held (memory)
                while todo:
                    pending.append(pool.submit(station_csv, job, *todo.popleft()))
                collect(len(pending) > 8 * workers)
            collect(True)
            t["polygon_s"] += time.perf_counter() - t1 - t["searching"] - t["pieces_s"]
            del t["searching"], t["done_st"]
    finally:
        set_network(None)
    if bar:
        bar.close()
    return t


def station_reach(
    conn: Connection, settings: CircleSettings, station_ids: list[int], reach_m: float
) -> dict[int, dict[int, float]]:
    """Network distance (m) from each station to every node within ``reach_m``, via pgRouting.

    The same snapping and search as the circles; {station_id: {node_id: metres}}.
    """
    _, groups, _ = _search(conn, settings, reach_m, station_ids,
                           metric_srid(conn, station_ids), False)
    out: dict[int, dict[int, float]] = {}
    for _, dd in groups:
        for sid, node, d in dd.itertuples(index=False):
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
    run_id: int | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> int:
    """Compute the service circles of every station (or ``station_ids``); return the run id.

    Tiers are walking network distances in metres; circles are stored in EPSG:4326.
    ``run_id``: a queued run to fill; ``on_progress(fraction)`` is called as circles are stored.
    """
    tiers = check_tiers(tiers_m or settings.circle_tiers_m)
    clip = check_clip(clip if clip is not None else settings.circle_clip)
    params: dict[str, Any] = {
        "tiers_m": tiers, "buffer_m": settings.circle_buffer_m, "clip": clip,
        "barrier_kinds": settings.circle_barrier_kinds,
        "walking_speed_m_per_min": settings.walking_speed_m_per_min,
        "batch_cell_m": settings.circle_batch_cell_m, "station_ids": station_ids,
    }
    params["search"] = settings.circle_search
    params["polygon_method"] = settings.circle_polygon_method
    params["raster_cell_m"] = settings.circle_raster_cell_m
    run_id = claim_run(conn, run_id, "circles", params)
    srid = metric_srid(conn, station_ids)
    timings, groups, edges = _search(conn, settings, max(tiers), station_ids, srid, progress)
    snapped = conn.execute(text("SELECT count(*) FROM _cs_station")).scalar_one()
    if on_progress:
        on_progress(0.05)
    timings.update(_polygons(conn, settings, tiers, srid, run_id, progress, groups, snapped,
                             (lambda f: on_progress(0.05 + 0.9 * f)) if on_progress else None,
                             edges))
    if clip:
        t0 = time.perf_counter()
        conn.execute(text(CLIP_SQL), {"level": clip, "run": run_id})
        timings["circles"] = conn.execute(
            text("SELECT count(*) FROM service_circle WHERE run_id = :r"), {"r": run_id}
        ).scalar_one()
        timings["clip_s"] = time.perf_counter() - t0
    total = conn.execute(
        text("SELECT count(*) FROM station WHERE CAST(:ids AS bigint[]) IS NULL OR id = ANY(:ids)"),
        {"ids": station_ids},
    ).scalar_one()
    summary = {
        "stations": total, "stations_snapped": snapped, "stations_skipped": total - snapped,
        "tiers_m": tiers,
        **{k: round(v, 3) for k, v in timings.items()},
    }
    _drop_temp(conn)
    finish_run(conn, run_id, summary, params)
    log.info("circles run %s: %s", run_id, summary)
    return run_id


def circles_geojson(
    conn: Connection, run_id: int, *, tier_m: float | None = None, limit: int | None = None,
    within: str | None = None, offset: int = 0,
) -> dict[str, Any]:
    """The run's circles (of stations whose community code starts with ``within``, if given)
    as an RFC 7946 FeatureCollection (lon, lat, WGS 84), ordered by id: ``limit`` of them from
    ``offset`` (None: all), with ``total``, how many match."""
    from geo.circles.runs import get_run

    get_run(conn, run_id, "circles")
    params = {"r": run_id, "t": tier_m, "n": limit, "o": offset, "w": within}
    matching = (
        " FROM service_circle sc JOIN station s2 ON s2.id = sc.station_id"
        " WHERE sc.run_id = :r AND (CAST(:t AS float8) IS NULL OR sc.tier_m = :t)"
        " AND (CAST(:w AS text) IS NULL OR s2.community_code LIKE :w || '%')")
    fc: dict[str, Any] = conn.execute(
        text(
            "SELECT json_build_object('type', 'FeatureCollection', 'features', "
            " coalesce(json_agg(json_build_object('type', 'Feature', 'id', c.id,"
            "  'geometry', ST_AsGeoJSON(c.geom, 6)::json,"
            "  'properties', json_build_object('station_id', c.station_id,"
            "   'station_code', s.code, 'kind', s.kind, 'tier_m', c.tier_m,"
            "   'tier_min', c.tier_min)) ORDER BY c.id), '[]'::json))"
            f" FROM (SELECT sc.* {matching}"
            "   ORDER BY sc.id LIMIT :n OFFSET :o) c"
            " JOIN station s ON s.id = c.station_id"
        ),
        params,
    ).scalar_one()
    fc["total"] = conn.execute(text(f"SELECT count(*) {matching}"), params).scalar_one()
    return fc
