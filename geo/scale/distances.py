"""Per-building walking distances on a Dask cluster (dask.distributed + dask-geopandas).

``building_distances_dask`` gives what ``geo.circles.distances.building_distances`` gives (the
same ids, distances and nearest stations), computed partition by partition on the workers:

1. **Partitions**: the buildings (ids and doors in the metric CRS ``srid``, read once by the
   caller's process) are cut by district (``building.district_code``), and a district of more
   than ``max_buildings`` into compact tiles along a Hilbert curve (dask-geopandas
   ``hilbert_distance`` over the buildings' bounds): one task per tile, its buildings
   scattered to the workers (not embedded in the scheduler's graph).
2. **Halo**: each partition's worker reads from PostgreSQL (COPY, bind parameters) the usable
   walk edges meeting its buildings' box grown by ``halo_m + snap_max_m`` and the stations in
   the box grown by ``halo_m``; the barrier rule (``BLOCKED_SELECT``) is evaluated on the
   edges in that box. Nothing is written, so a hot standby serves (no temp tables).
3. **Per partition** the single process's computation (``distances_on``: snapping, one
   multi-source Dijkstra per kind, cut at ``limit_m``) on the halo network; the partitions'
   rows are concatenated and put in building-id order.

Why the halo gives the whole network's answer: a walk of at most ``limit_m`` from a building
(its access leg, edges, a station's access leg) never leaves the disc of radius ``limit_m``
around the door, up to the difference between the edges' stored ``length_m`` and their length
in the metric CRS (UTM scale, < 1 % inside a zone; ``HALO_SLACK`` allows 5 %). So every
station and edge of such a walk is in the halo (a station's snapping edge within
``snap_max_m`` of it, else the station is skipped in both runs); the partition's network is a
part of the whole, so it has no shorter walk either. A door whose nearest edge lies outside the
halo is farther than ``limit_m`` from every edge: none within reach in both runs.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pandas as pd

from geo.circles.build import BLOCKED_SELECT
from geo.circles.distances import EDGES_SQL, STATIONS_SQL, distances_on, load_network
from geo.circles.runs import read_copy

HALO_SLACK = 1.05  # stored edge lengths vs their length in the metric CRS (UTM scale error)
HILBERT_LEVEL = 16
SEGMENT_M = 250.0  # the box's sides are segmentized before it is transformed to WGS 84

BUILDINGS_SQL = """
SELECT b.id, coalesce(b.district_code, ''), ST_X(ST_Transform(b.location, {srid})),
       ST_Y(ST_Transform(b.location, {srid}))
FROM building b ORDER BY b.id
"""
BOX_CTE = """
WITH box AS (
  SELECT ST_Transform(ST_Segmentize(ST_MakeEnvelope(:ex0, :ey0, :ex1, :ey1, :srid), :seg), 4326)
           AS edges,
         ST_Transform(ST_Segmentize(ST_MakeEnvelope(:sx0, :sy0, :sx1, :sy1, :srid), :seg), 4326)
           AS stations),
_cs_blocked AS MATERIALIZED ({blocked} AND e.geom && (SELECT edges FROM box))
"""

_ENGINES: dict[str, Any] = {}


def _engine(url: str) -> Any:
    """One small engine per worker process and database URL."""
    from geo.core.db import make_engine

    if url not in _ENGINES:
        _ENGINES[url] = make_engine(url, pool_size=1)
    return _ENGINES[url]


def halo_for(limit_m: float) -> float:
    """The default halo (m) around a partition's buildings for walks up to ``limit_m``."""
    return limit_m * HALO_SLACK


def partition_numbers(district: np.ndarray, hilbert: np.ndarray, max_buildings: int
                      ) -> np.ndarray:
    """Partition number of each building: districts in code order, each cut into
    ceil(n / ``max_buildings``) tiles of consecutive Hilbert keys (equal counts)."""
    order = np.lexsort((hilbert, district))
    d = district[order]
    starts = np.r_[0, np.nonzero(d[1:] != d[:-1])[0] + 1, len(d)]
    part = np.empty(len(d), dtype=np.int64)
    first = 0
    for a, b in zip(starts[:-1], starts[1:], strict=True):
        tiles = max(1, math.ceil((b - a) / max_buildings))
        part[order[a:b]] = first + np.arange(b - a) * tiles // (b - a)
        first += tiles
    return part


def _meta(kinds: list[str]) -> pd.DataFrame:
    cols: dict[str, Any] = {"id": pd.Series(dtype="int64")}
    for k in range(len(kinds)):
        cols[f"d{k}"] = pd.Series(dtype="float64")
        cols[f"n{k}"] = pd.Series(dtype="int64")
    cols["edges"] = pd.Series(dtype="int64")
    return pd.DataFrame(cols)


def partition_distances(part: pd.DataFrame, url: str, srid: int, kinds: list[str],
                        limit_m: float, snap_max_m: float, barrier_kinds: list[str],
                        halo_m: float) -> pd.DataFrame:
    """Distances of one partition's buildings (``id``, ``x``, ``y`` in m, CRS ``srid``) over
    its halo network read at ``url``: ``id``, ``d<k>`` (m, inf: none within ``limit_m``) and
    ``n<k>`` (nearest station id, -1: none) per kind number k, and ``edges`` (halo size)."""
    if part.empty:
        return _meta(kinds)
    x, y = part["x"].to_numpy(float), part["y"].to_numpy(float)
    s_grow, e_grow = halo_m, halo_m + snap_max_m
    x0, y0, x1, y1 = float(x.min()), float(y.min()), float(x.max()), float(y.max())
    params = {"srid": int(srid), "seg": SEGMENT_M, "kinds": list(barrier_kinds),
              "ex0": x0 - e_grow, "ey0": y0 - e_grow, "ex1": x1 + e_grow, "ey1": y1 + e_grow,
              "sx0": x0 - s_grow, "sy0": y0 - s_grow, "sx1": x1 + s_grow, "sy1": y1 + s_grow}
    cte = BOX_CTE.format(blocked=BLOCKED_SELECT.strip())
    with _engine(url).connect() as conn:
        edges_sql = cte + EDGES_SQL.format(srid=int(srid),
                                           where=" AND e.geom && (SELECT edges FROM box)")
        net = load_network(conn, srid, edges_sql, params)
        stations = read_copy(conn, cte + STATIONS_SQL.format(
            srid=int(srid), where="WHERE s.location && (SELECT stations FROM box) "),
            ["id", "kind", "x", "y"], params)
        conn.rollback()
    if len(net.u) == 0:  # no walk edge near: nothing within reach (an empty tree cannot snap)
        dist = np.full((len(part), len(kinds)), np.inf)
        near = np.full((len(part), len(kinds)), -1, np.int64)
    else:
        dist, near, _ = distances_on(net, stations, x, y, kinds, limit_m, snap_max_m)
    out: dict[str, Any] = {"id": part["id"].to_numpy(np.int64)}
    for k in range(len(kinds)):
        out[f"d{k}"] = dist[:, k]
        out[f"n{k}"] = near[:, k].astype(np.int64)
    out["edges"] = np.full(len(part), len(net.u), np.int64)
    return pd.DataFrame(out, index=part.index)


def building_distances_dask(
    client: Any, url: str, srid: int, kinds: list[str], limit_m: float, snap_max_m: float,
    barrier_kinds: list[str], *, halo_m: float | None = None, max_buildings: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, float]]:
    """``building_distances``'s answer (building ids, distances in m with inf for none within
    ``limit_m``, nearest station ids with -1 for none, and timings) computed on the cluster of
    ``client``; the workers read the database at ``url``. ``halo_m``: the partitions' halo
    (default ``halo_for(limit_m)``; smaller loses walks). ``max_buildings``: buildings a
    partition at most (default ``WANGGE_DASK_PARTITION_BUILDINGS``)."""
    import dask_geopandas
    import geopandas as gpd

    from geo.scale.settings import ScaleSettings

    max_buildings = max_buildings or ScaleSettings().dask_partition_buildings

    halo = halo_for(limit_m) if halo_m is None else float(halo_m)
    t0 = time.perf_counter()
    eng = _engine(url)
    with eng.connect() as conn:
        b = read_copy(conn, BUILDINGS_SQL.format(srid=int(srid)), ["id", "district", "x", "y"])
    b["id"] = b["id"].astype(np.int64)
    b["district"] = b["district"].fillna("").astype(str)
    n = len(b)
    if n == 0:
        z = np.zeros((0, len(kinds)))
        return (np.zeros(0, np.int64), z, z.astype(np.int64),
                {"network_fetch_s": 0.0, "partitions": 0.0})
    gdf = gpd.GeoDataFrame(b, geometry=gpd.points_from_xy(b["x"], b["y"]), crs=int(srid))
    spread = dask_geopandas.from_geopandas(gdf, npartitions=max(1, n // max_buildings))
    hilbert = spread.hilbert_distance(  # here: the points are here, shipping them costs more
        total_bounds=tuple(gdf.total_bounds), level=HILBERT_LEVEL).compute(
        scheduler="sync").to_numpy()
    part = partition_numbers(b["district"].to_numpy(), hilbert, max_buildings)
    parts = int(part.max()) + 1
    t1 = time.perf_counter()
    order = np.argsort(part, kind="stable")
    cuts = np.searchsorted(part[order], np.arange(1, parts))
    xy = b[["id", "x", "y"]]
    frames = [xy.iloc[i] for i in np.split(order, cuts)]
    # the tiles go straight to the workers (scatter), not through the scheduler's graph
    futures = client.map(partition_distances, client.scatter(frames), url=url, srid=int(srid),
                         kinds=list(kinds), limit_m=float(limit_m),
                         snap_max_m=float(snap_max_m), barrier_kinds=list(barrier_kinds),
                         halo_m=halo)
    found = pd.concat(client.gather(futures), ignore_index=True)
    t2 = time.perf_counter()
    found = found.set_index("id").reindex(b["id"].to_numpy())
    if found.index.hasnans or found["edges"].isna().any():
        raise RuntimeError("a building got no answer from its partition")
    dist = found[[f"d{k}" for k in range(len(kinds))]].to_numpy(float)
    near = found[[f"n{k}" for k in range(len(kinds))]].to_numpy(np.int64)
    timings = {"partition_s": t1 - t0, "search_s": t2 - t1, "partitions": float(parts),
               "halo_m": halo, "halo_edges": float(found["edges"].groupby(part).first().sum()),
               "workers": float(len(client.scheduler_info().get("workers", {})))}
    return b["id"].to_numpy(np.int64), dist, near, timings
