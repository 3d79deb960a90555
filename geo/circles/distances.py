"""Walking distance from every building to the nearest station of every kind (metres).

Method (metres in the district's metric CRS):

1. The usable walk network: every walk edge except those crossing a barrier (river, railway,
   arterial) that are not a crossing, bridge or tunnel (the circles' rule, ``BLOCKED_SQL``);
   edge costs are ``walk_edge.length_m`` both ways, as in pgRouting.
2. Each building's door (its stored location) and each station is joined to its nearest usable
   edge (a shapely STRtree ``query_nearest``): the access leg (door to edge, straight) counts,
   and the position along the edge splits it in two.
3. Per station kind, one multi-source Dijkstra (``scipy.sparse.csgraph.dijkstra`` with
   ``indices`` and ``min_only=True``) from one virtual node per station, joined to both ends of
   its edge with its access leg plus the part of the edge to that end, cut at
   ``distance_limit_m``. A building's distance is its access leg plus the shorter way to either
   end of its edge and on to the nearest station, or straight along the edge to a station on
   the same edge.

Everything runs in numpy/scipy in memory; nothing is written here (``coverage`` stores it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import shapely
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import dijkstra
from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.circles.runs import read_copy


@dataclass
class Snapped:
    """Points joined to their nearest usable edge: edge index, fraction along it (of its
    planar length), access leg (m)."""

    edge: np.ndarray
    frac: np.ndarray
    access: np.ndarray


@dataclass
class Network:
    """The usable walk network: edge ends as node indices, costs (m), metric geometries."""

    u: np.ndarray
    v: np.ndarray
    length: np.ndarray
    geoms: np.ndarray
    nodes: int
    tree: shapely.STRtree

    def snap(self, x: np.ndarray, y: np.ndarray) -> Snapped:
        """Join points (m) to their nearest edge."""
        pts = shapely.points(x, y)
        if len(pts) == 0:
            z = np.zeros(0)
            return Snapped(z.astype(np.int64), z, z)
        (pi, ei), dist = self.tree.query_nearest(pts, return_distance=True, all_matches=False)
        order = np.argsort(pi, kind="stable")
        edge = ei[order]
        frac = shapely.line_locate_point(self.geoms[edge], pts, normalized=True)
        return Snapped(edge, np.nan_to_num(frac), dist[order])


EDGES_SQL = """
SELECT e.source, e.target, e.length_m, ST_AsHEXEWKB(ST_Transform(e.geom, {srid}))
FROM walk_edge e WHERE NOT EXISTS (SELECT 1 FROM _cs_blocked x WHERE x.edge_id = e.id){where}
ORDER BY e.id
"""


def load_network(conn: Connection, srid: int, query: str | None = None,
                 params: dict[str, Any] | None = None) -> Network:
    """The usable edges (``_cs_blocked`` must exist) in the metric CRS ``srid``; ``query``:
    ``EDGES_SQL`` with a condition (a partition's box) and its ``params``."""
    sql = query or EDGES_SQL.format(srid=int(srid), where="")
    df = read_copy(conn, sql, ["source", "target", "len", "wkb"], params)
    ids, inv = np.unique(np.r_[df["source"].to_numpy(), df["target"].to_numpy()],
                         return_inverse=True)
    n = len(df)
    geoms = shapely.from_wkb(df["wkb"].to_numpy())
    return Network(inv[:n], inv[n:], df["len"].to_numpy(float), geoms, len(ids),
                   shapely.STRtree(geoms))


def sparse_graph(rows: np.ndarray, cols: np.ndarray, w: np.ndarray, n: int) -> csr_matrix:
    """A directed CSR graph of ``n`` nodes; of parallel arcs the shortest is kept (a sparse
    matrix would add them up), and a zero cost is kept just above zero (it would vanish)."""
    key = rows.astype(np.int64) * n + cols
    order = np.lexsort((w, key))
    first = np.r_[True, key[order][1:] != key[order][:-1]]
    pick = order[first]
    return coo_matrix((np.maximum(w[pick], 1e-9), (rows[pick], cols[pick])),
                      shape=(n, n)).tocsr()


def nearest_by_kind(
    net: Network, station_kind: np.ndarray, st: Snapped, bd: Snapped, kinds: list[str],
    limit_m: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Distances (m; inf beyond ``limit_m``) from each building to the nearest station of
    each kind, shape (buildings, kinds), and that station's index (-1: none)."""
    nb, nk = len(bd.edge), len(kinds)
    dist = np.full((nb, nk), np.inf)
    near = np.full((nb, nk), -1, np.int64)
    n = net.nodes
    ns = len(st.edge)
    lu = net.length[st.edge]
    rows = np.r_[net.u, net.v, n + np.arange(ns), n + np.arange(ns)]
    cols = np.r_[net.v, net.u, net.u[st.edge], net.v[st.edge]]
    w = np.r_[net.length, net.length, st.access + st.frac * lu, st.access + (1 - st.frac) * lu]
    g = sparse_graph(rows, cols, w, n + ns)
    bl = net.length[bd.edge]
    bu, bv = net.u[bd.edge], net.v[bd.edge]
    for k, kind in enumerate(kinds):
        src = np.nonzero(station_kind == kind)[0]
        if len(src) == 0:
            continue
        d, _, origin = dijkstra(g, directed=True, indices=n + src, min_only=True,
                                limit=limit_m, return_predecessors=True)
        via_u = d[bu] + bd.frac * bl
        via_v = d[bv] + (1 - bd.frac) * bl
        best = np.minimum(via_u, via_v)
        who = np.where(via_u <= via_v, origin[bu], origin[bv]) - n
        # a station on the building's own edge: straight along the edge
        same = pd.DataFrame({"b": np.arange(nb), "edge": bd.edge}).merge(
            pd.DataFrame({"s": src, "edge": st.edge[src]}), on="edge")
        if len(same):
            bi, si = same["b"].to_numpy(), same["s"].to_numpy()
            direct = st.access[si] + np.abs(st.frac[si] - bd.frac[bi]) * bl[bi]
            o = np.lexsort((direct, bi))
            first = np.r_[True, bi[o][1:] != bi[o][:-1]]
            bi, si, direct = bi[o][first], si[o][first], direct[o][first]
            better = direct < best[bi]
            best[bi[better]] = direct[better]
            who[bi[better]] = si[better]
        total = best + bd.access
        ok = np.isfinite(total) & (total <= limit_m)
        dist[ok, k] = total[ok]
        near[ok, k] = who[ok]
    return dist, near


STATIONS_SQL = """
SELECT s.id, s.kind, ST_X(ST_Transform(s.location, {srid})), ST_Y(ST_Transform(s.location, {srid}))
FROM station s {where}ORDER BY s.id
"""
BUILDINGS_SQL = """
SELECT b.id, ST_X(ST_Transform(b.location, {srid})), ST_Y(ST_Transform(b.location, {srid}))
FROM building b ORDER BY b.id
"""


def building_distances(
    conn: Connection, srid: int, kinds: list[str], limit_m: float, snap_max_m: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, float]]:
    """Building ids, distances (m, inf: none within ``limit_m``; buildings, kinds) and nearest
    station ids (-1: none), and the seconds of each step. ``_cs_blocked`` must exist.

    Stations farther than ``snap_max_m`` from any usable edge are left out, as for circles.
    """
    t0 = time.perf_counter()
    net = load_network(conn, srid)
    stations = read_copy(conn, STATIONS_SQL.format(srid=int(srid), where=""),
                         ["id", "kind", "x", "y"])
    buildings = read_copy(conn, BUILDINGS_SQL.format(srid=int(srid)), ["id", "x", "y"])
    t1 = time.perf_counter()
    dist, near_id, timings = distances_on(net, stations, buildings["x"].to_numpy(float),
                                          buildings["y"].to_numpy(float), kinds, limit_m,
                                          snap_max_m)
    timings = {"network_fetch_s": t1 - t0, **timings}
    return buildings["id"].to_numpy(np.int64), dist, near_id, timings


def distances_on(
    net: Network, stations: pd.DataFrame, bx: np.ndarray, by: np.ndarray, kinds: list[str],
    limit_m: float, snap_max_m: float,
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Distances (m, inf: none within ``limit_m``; buildings, kinds) and nearest station ids
    (-1: none) of the buildings at ``bx``/``by`` (m, the network's CRS) over ``net``, from
    ``stations`` (id, kind, x, y in m), and the seconds of each step. The single process runs
    it on the whole network, a Dask partition (``geo.scale.distances``) on its halo."""
    t1 = time.perf_counter()
    st = net.snap(stations["x"].to_numpy(float), stations["y"].to_numpy(float))
    keep = st.access <= snap_max_m
    st = Snapped(st.edge[keep], st.frac[keep], st.access[keep])
    sid = stations["id"].to_numpy(np.int64)[keep]
    skind = stations["kind"].to_numpy(str)[keep]
    bd = net.snap(bx, by)
    t2 = time.perf_counter()
    dist, near = nearest_by_kind(net, skind, st, bd, kinds, limit_m)
    near_id = np.where(near >= 0, sid[np.maximum(near, 0)] if len(sid) else -1, -1)
    t3 = time.perf_counter()
    timings = {"snap_s": t2 - t1, "search_s": t3 - t2, "edges": float(len(net.u)),
               "stations_used": float(len(sid))}
    return dist, near_id, timings


def access_points(conn: Connection, srid: int) -> pd.DataFrame:
    """Each building's access point: building id, edge (walk_edge id), fraction along the
    edge, access leg (m). For tests and inspection; ``_cs_blocked`` must exist."""
    ids = np.array([r[0] for r in conn.execute(text(
        "SELECT e.id FROM walk_edge e WHERE NOT EXISTS (SELECT 1 FROM _cs_blocked x "
        "WHERE x.edge_id = e.id) ORDER BY e.id"))], dtype=np.int64)
    net = load_network(conn, srid)
    b = read_copy(conn, BUILDINGS_SQL.format(srid=int(srid)), ["id", "x", "y"])
    sn = net.snap(b["x"].to_numpy(float), b["y"].to_numpy(float))
    return pd.DataFrame({"building_id": b["id"].to_numpy(np.int64), "edge_id": ids[sn.edge],
                         "frac": sn.frac, "access_m": sn.access})
