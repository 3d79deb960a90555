"""The units graph of a draft partition, its seed partition and the balance score.

Units are street blocks cut between buildings (``geo.planning.drafts.draft_units``); two units
are neighbours when they share a boundary (``unit_neighbors``). Where the community itself is in
pieces (a MultiPolygon) or a unit touches the others only at a corner, ``link_components`` joins
each detached piece to its nearest unit, so a grid may hold such a piece and stay one connected
set of units. ``tree_partition`` seeds k contiguous regions by recursive spanning-tree
bisection (GerryChain's ``recursive_tree_part`` idea); the refinement is
``geo.planning.flips`` (own local search, the default) or ``geo.planning.recom`` (GerryChain's
ReCom). Pure arithmetic on unit labels plus shapely in a metric CRS (metres); no database.
"""

from __future__ import annotations

import math
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import breadth_first_order, minimum_spanning_tree

from geo.data.crs import polygonal


def explode_units(units: Any, buildings: Any) -> Any:
    """Units (GeoDataFrame, metric CRS) split into their single polygons, households recounted
    from ``buildings`` (points with ``households``) by location, centroids ``x``, ``y`` (m):
    a strip cut between buildings can come out in two pieces, and a grid made of it would not
    be contiguous. Slivers join a neighbour (``absorb_slivers``); ``core`` keeps each unit
    without them, for adjacency (a sliver would join units through a zero-width spike)."""
    valid = units[["geometry"]].copy()
    # strips may self-touch; make_valid may then nest a MultiPolygon in a GeometryCollection,
    # which one explode level would drop (a gap in the draft's cover)
    valid["geometry"] = [polygonal(g) for g in shapely.make_valid(valid.geometry.values)]
    parts = valid[valid.geometry.notna()].explode(index_parts=False).reset_index(drop=True)
    parts = parts[parts.geom_type.eq("Polygon") & (parts.geometry.area > 0)]
    thin = slivers(parts.geometry.values)
    core = parts.geometry.values[~thin] if not thin.all() else parts.geometry.values
    parts = gpd.GeoDataFrame({"core": core}, geometry=absorb_slivers(parts.geometry.values),
                             crs=units.crs)
    geoms = parts.geometry.values
    pt, part = shapely.STRtree(geoms).query(buildings.geometry.values, predicate="intersects")
    first = np.unique(pt, return_index=True)[1]  # a building on a shared edge counts once
    hh = np.bincount(part[first], weights=buildings["households"].to_numpy()[pt[first]],
                     minlength=len(parts))
    parts["households"] = hh.round().astype(int)
    cent = parts.geometry.centroid
    parts["x"], parts["y"] = cent.x.to_numpy(), cent.y.to_numpy()
    return parts


def absorb_slivers(geoms: Any, *, snap_m: float = 0.05) -> np.ndarray:
    """Polygons (metric CRS) with each sliver (``slivers``) joined to the other polygon it
    shares most boundary with (within ``snap_m`` metres), else the nearest: a sliver has no
    width to carry a grid across, and a grid holding units that meet only through a sliver
    would fall apart once float gaps are closed."""
    g = np.asarray(geoms, dtype=object).copy()
    thin = slivers(g)
    keep = np.flatnonzero(~thin)
    if not thin.any() or not len(keep):
        return g
    tree = shapely.STRtree(g[keep])
    for s in np.flatnonzero(thin):
        near = keep[tree.query(g[s], predicate="dwithin", distance=snap_m)]
        if len(near):
            shared = shapely.length(shapely.intersection(shapely.boundary(g[near]),
                                                         shapely.buffer(g[s], snap_m)))
            t = int(near[int(np.argmax(shared))])
        else:
            t = int(keep[tree.query_nearest(g[s])[0]])
        g[t] = shapely.union_all([g[t], g[s]])
    return g[keep]


def unit_neighbors(geoms: Any, *, snap_m: float = 0.05,
                   min_shared_m: float = 1.0) -> dict[int, list[int]]:
    """Units (polygons in a metric CRS, metres) that share a boundary of at least
    ``min_shared_m`` metres, allowing ``snap_m`` of float noise: strips cut between buildings
    meet along Voronoi edges that an exact shared-vertex (Rook) test misses. Corners only
    (a point) do not count, nor do slivers (``slivers``: no width to carry a grid across);
    ``link_components`` attaches those to their nearest unit."""
    g = np.asarray(geoms, dtype=object)
    a, b = shapely.STRtree(g).query(g, predicate="dwithin", distance=snap_m)
    thin = slivers(g)
    keep = (a < b) & ~thin[a] & ~thin[b]
    a, b = a[keep], b[keep]
    shared = shapely.length(shapely.intersection(shapely.boundary(g[b]),
                                                 shapely.buffer(g[a], snap_m)))
    out: dict[int, list[int]] = {i: [] for i in range(len(g))}
    for i, j in zip(a[shared >= min_shared_m], b[shared >= min_shared_m], strict=True):
        out[int(i)].append(int(j))
        out[int(j)].append(int(i))
    return out


def slivers(geoms: Any, *, min_area_m2: float = 1.0, min_width_m: float = 0.2) -> np.ndarray:
    """Which units are slivers (metric CRS): under ``min_area_m2``, or thinner than
    ``min_width_m`` on average (2 × area / perimeter)."""
    g = np.asarray(geoms, dtype=object)
    area, length = shapely.area(g), shapely.length(g)
    thin: np.ndarray = (area < min_area_m2) | (2 * area / np.maximum(length, 1e-9) < min_width_m)
    return thin


def link_components(geoms: Any, neighbors: dict[int, list[int]]) -> list[tuple[int, int]]:
    """Join the parts of the units graph (in place): the smaller part's unit nearest to another
    part (metres, shapely distance) is linked to it, largest parts first, until the graph is one
    piece. Returns the links added (pieces of a MultiPolygon community, corner-only touches)."""
    g = np.asarray(geoms, dtype=object)
    links: list[tuple[int, int]] = []
    while True:
        parts = components(np.arange(len(g)), neighbors)
        if len(parts) < 2:
            return links
        small = np.asarray(parts[-1])
        rest = np.asarray([u for p in parts[:-1] for u in p])
        tree = shapely.STRtree(g[rest])
        near_small, near_rest = tree.query_nearest(g[small], all_matches=False)
        d = shapely.distance(g[small[near_small]], g[rest[near_rest]])
        k = int(np.argmin(d))
        a, b = int(small[near_small[k]]), int(rest[near_rest[k]])
        neighbors[a].append(b)
        neighbors[b].append(a)
        links.append((a, b))


def score(sums: np.ndarray, lo: int, hi: int) -> tuple[int, float, float]:
    """(grids outside ``lo``..``hi`` households, largest/smallest, sum of squares): lower wins."""
    sums = np.asarray(sums, dtype=float)
    out = int(((sums < lo) | (sums > hi)).sum())
    return out, float(sums.max() / max(sums.min(), 1.0)), float((sums ** 2).sum())


def ratio_bound(hh: np.ndarray, k: int) -> float:
    """A lower bound on largest/smallest households of any partition of units ``hh`` into
    ``k`` grids (``bound_of`` with the largest unit and the total)."""
    return bound_of(float(np.max(hh)), float(np.sum(hh)), k)


def bound_of(largest: float, total: float, k: int) -> float:
    """Largest/smallest of ``k`` grids of ``total`` households is at least this when one
    indivisible unit holds ``largest``: the grid holding it has max(largest, total/k), so the
    smallest has at most (total - that)/(k - 1)."""
    if k < 2 or total <= 0:
        return 1.0
    top = max(largest, total / k)
    return top / max(min((total - top) / (k - 1), total / k), 1.0)


def grid_counts(total: float, lo: int, hi: int, extra: int = 3) -> list[int]:
    """Numbers of grids whose mean households lies in ``lo``..``hi``: the fewest and up to
    ``extra`` more."""
    kmin = max(1, math.ceil(total / hi))
    kmax = max(kmin, int(total // max(lo, 1)))
    return list(range(kmin, min(kmax, kmin + extra) + 1))


def _edges(nodes: np.ndarray, neighbors: dict[int, list[int]]) -> tuple[list[int], list[int]]:
    pos = {int(u): i for i, u in enumerate(nodes)}
    rows, cols = [], []
    for i, u in enumerate(nodes):
        for v in neighbors[int(u)]:
            j = pos.get(int(v))
            if j is not None and j > i:
                rows.append(i)
                cols.append(j)
    return rows, cols


def tree_split(nodes: np.ndarray, neighbors: dict[int, list[int]], hh: np.ndarray,
               share: float, rng: np.random.Generator, trees: int = 8) -> np.ndarray | None:
    """Cut the connected units ``nodes`` in two along one edge of a random spanning tree so one
    side holds as near ``share`` of the households as the best of ``trees`` trees allows: a
    boolean mask of that side (both sides connected), or None (one unit, or not connected)."""
    n = len(nodes)
    if n < 2:
        return None
    rows, cols = _edges(nodes, neighbors)
    if not rows:
        return None
    w = hh[nodes].astype(float) + 1e-6  # empty units still count a little: no empty side
    total = w.sum()
    best: tuple[float, np.ndarray] | None = None
    for _ in range(trees):
        g = coo_matrix((rng.random(len(rows)) + 1.0, (rows, cols)), shape=(n, n)).tocsr()
        tree = minimum_spanning_tree(g)
        tree = tree + tree.T
        order, pred = breadth_first_order(tree, 0, directed=False)
        if len(order) < n:
            return None
        sub = w.copy()
        for v in order[::-1][:-1]:  # children before parents: subtree sums
            sub[pred[v]] += sub[v]
        below = sub[order[1:]]
        gap_in = np.abs(below - share * total)  # the subtree is the ``share`` side
        gap_out = np.abs(total - below - share * total)  # the rest is
        k = int(np.argmin(np.minimum(gap_in, gap_out)))
        gap = float(min(gap_in[k], gap_out[k]))
        if best is None or gap < best[0]:
            root = order[1:][k]
            side = np.zeros(n, bool)
            side[root] = True
            for v in order:
                if v != root and pred[v] >= 0 and side[pred[v]]:
                    side[v] = True
            best = (gap, side if gap_in[k] <= gap_out[k] else ~side)
    return best[1] if best else None


def tree_partition(neighbors: dict[int, list[int]], hh: np.ndarray, k: int,
                   rng: np.random.Generator) -> np.ndarray:
    """Labels 0..k-1 of ``k`` contiguous regions of the (connected) units graph, households
    near total/k each: recursive spanning-tree bisection in shares k//2 : k - k//2."""
    labels = np.zeros(len(hh), int)
    todo = [(np.arange(len(hh)), k, 0)]
    while todo:
        nodes, parts, first = todo.pop()
        if parts == 1:
            labels[nodes] = first
            continue
        left = parts // 2
        side = tree_split(nodes, neighbors, hh, left / parts, rng)
        if side is None:  # cannot cut further: fewer regions than asked
            labels[nodes] = first
            continue
        todo.append((nodes[side], left, first))
        todo.append((nodes[~side], parts - left, first + left))
    return np.unique(labels, return_inverse=True)[1]


def components(members: np.ndarray, neighbors: dict[int, list[int]]) -> list[list[int]]:
    """Connected parts of the units ``members`` (largest first)."""
    rest = {int(u) for u in members}
    parts = []
    while rest:
        start = rest.pop()
        part, stack = [start], [start]
        while stack:
            for v in neighbors[stack.pop()]:
                if v in rest:
                    rest.discard(v)
                    part.append(v)
                    stack.append(v)
        parts.append(part)
    return sorted(parts, key=len, reverse=True)
