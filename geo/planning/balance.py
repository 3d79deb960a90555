"""Balancing a draft partition after max-p: a hill-climbing ReCom (recombination) step.

ReCom (DeFord, Duchin & Solomon; GerryChain's ``recom``) merges two adjacent regions, draws a
random spanning tree of their units and cuts the one tree edge that splits the households most
evenly: both halves are contiguous by construction, and since units are street blocks (cut
between buildings) the grids still follow streets. Here it is used greedily, not as a Markov
chain: a recombination is kept only when it lowers the partition's score (grids outside the
balance rule, largest/smallest households, sum of squared households), so surplus flows
through chains of regions. Pure arithmetic on unit labels; no database, no CRS.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import breadth_first_order, minimum_spanning_tree

METHOD = "max-p + ReCom refinement"


def explode_units(units: Any, buildings: Any) -> Any:
    """Units (GeoDataFrame, metric CRS) split into their single polygons, households recounted
    from ``buildings`` (points with ``households``) by location, centroids ``x``, ``y`` (m):
    a strip cut between buildings can come out in two pieces, and a grid made of it would not
    be contiguous."""
    valid = units[["geometry"]].copy()
    valid["geometry"] = shapely.make_valid(valid.geometry.values)  # strips may self-touch
    parts = valid.explode(index_parts=False).reset_index(drop=True)
    parts = parts[parts.geom_type.eq("Polygon") & (parts.geometry.area > 0)].reset_index(
        drop=True)
    geoms = parts.geometry.values
    pt, part = shapely.STRtree(geoms).query(buildings.geometry.values, predicate="intersects")
    first = np.unique(pt, return_index=True)[1]  # a building on a shared edge counts once
    hh = np.bincount(part[first], weights=buildings["households"].to_numpy()[pt[first]],
                     minlength=len(parts))
    parts["households"] = hh.round().astype(int)
    cent = parts.geometry.centroid
    parts["x"], parts["y"] = cent.x.to_numpy(), cent.y.to_numpy()
    return parts


def unit_neighbors(geoms: Any, *, snap_m: float = 0.05,
                   min_shared_m: float = 1.0) -> dict[int, list[int]]:
    """Units (polygons in a metric CRS, metres) that share a boundary of at least
    ``min_shared_m`` metres, allowing ``snap_m`` of float noise: strips cut between buildings
    meet along Voronoi edges that an exact shared-vertex (Rook) test misses. Corners only
    (a point) do not count."""
    g = np.asarray(geoms, dtype=object)
    a, b = shapely.STRtree(g).query(g, predicate="dwithin", distance=snap_m)
    keep = a < b
    a, b = a[keep], b[keep]
    shared = shapely.length(shapely.intersection(shapely.boundary(g[b]),
                                                 shapely.buffer(g[a], snap_m)))
    out: dict[int, list[int]] = {i: [] for i in range(len(g))}
    for i, j in zip(a[shared >= min_shared_m], b[shared >= min_shared_m], strict=True):
        out[int(i)].append(int(j))
        out[int(j)].append(int(i))
    return out


def score(sums: np.ndarray, lo: int, hi: int) -> tuple[int, float, float]:
    """(grids outside ``lo``..``hi`` households, largest/smallest, sum of squares): lower wins."""
    out = int(((sums < lo) | (sums > hi)).sum())
    return out, float(sums.max() / max(sums.min(), 1.0)), float((sums.astype(float) ** 2).sum())


def best_tree_cut(nodes: np.ndarray, neighbors: dict[int, list[int]], hh: np.ndarray,
                  rng: np.random.Generator, trees: int) -> np.ndarray | None:
    """The most even split of ``nodes`` (unit indices, connected) by households over
    ``trees`` random spanning trees: a boolean mask of one side, or None (one unit)."""
    n = len(nodes)
    if n < 2:
        return None
    pos = {int(u): i for i, u in enumerate(nodes)}
    rows, cols = [], []
    for i, u in enumerate(nodes):
        for v in neighbors[int(u)]:
            j = pos.get(int(v))
            if j is not None and j > i:
                rows.append(i)
                cols.append(j)
    if not rows:
        return None
    w = hh[nodes].astype(float)
    total = w.sum()
    best: tuple[float, np.ndarray] | None = None
    for _ in range(trees):
        weights = rng.random(len(rows)) + 1.0
        g = coo_matrix((weights, (rows, cols)), shape=(n, n)).tocsr()
        tree = minimum_spanning_tree(g)
        tree = tree + tree.T
        order, pred = breadth_first_order(tree, 0, directed=False)
        if len(order) < n:  # not connected: no tree spans the pair
            return None
        sub = w.copy()
        for v in order[::-1][:-1]:  # children before parents: subtree sums
            sub[pred[v]] += sub[v]
        gap = np.abs(total - 2 * sub[order[1:]])
        k = int(np.argmin(gap))
        if best is None or gap[k] < best[0]:
            root = order[1:][k]
            side = np.zeros(n, bool)  # the subtree under ``root``
            side[root] = True
            for v in order:
                if v != root and pred[v] >= 0 and side[pred[v]]:
                    side[v] = True
            best = (float(gap[k]), side)
    return best[1] if best else None


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


def make_contiguous(labels: np.ndarray, neighbors: dict[int, list[int]],
                    hh: np.ndarray) -> np.ndarray:
    """Give each detached part of a region (all but its largest) to the lightest adjacent
    region, so every region is one connected piece (max-p's own adjacency may be coarser)."""
    labels = labels.copy()
    for _ in range(len(labels)):
        moved = False
        for r in np.unique(labels):
            for part in components(np.flatnonzero(labels == r), neighbors)[1:]:
                around = {int(labels[v]) for u in part for v in neighbors[u]} - {int(r)}
                if around:
                    labels[part] = min(around, key=lambda q: float(hh[labels == q].sum()))
                    moved = True
        if not moved:
            break
    return labels


def recom_refine(labels: np.ndarray, neighbors: dict[int, list[int]], hh: np.ndarray,
                 lo: int, hi: int, *, seed: int = 0, trees: int = 8,
                 max_rounds: int = 400) -> np.ndarray:
    """Refine region ``labels`` of units (``neighbors``: unit adjacency, ``hh``: households per
    unit) by greedy ReCom: adjacent region pairs, most unequal first, are re-split along a
    random spanning tree; a re-split is kept when ``score`` drops. Stops when no pair improves
    (or after ``max_rounds`` kept moves). Detached parts are first joined to a neighbouring
    region (``make_contiguous``). Returns new labels; every region contiguous."""
    labels = make_contiguous(labels, neighbors, hh)
    rng = np.random.default_rng(seed)
    for _ in range(max_rounds):
        keys = np.unique(labels)
        sums = {int(r): float(hh[labels == r].sum()) for r in keys}
        arr = np.array([sums[int(r)] for r in keys])
        cur = score(arr, lo, hi)
        pairs = {(min(int(labels[i]), int(labels[j])), max(int(labels[i]), int(labels[j])))
                 for i, js in neighbors.items() for j in js if labels[i] != labels[j]}
        for a, b in sorted(pairs, key=lambda p: -abs(sums[p[0]] - sums[p[1]])):
            nodes = np.flatnonzero((labels == a) | (labels == b))
            side = best_tree_cut(nodes, neighbors, hh, rng, trees)
            if side is None:
                continue
            trial = labels.copy()
            trial[nodes[side]] = a
            trial[nodes[~side]] = b
            new = np.array([float(hh[trial == r].sum()) for r in keys])
            if score(new, lo, hi) < cur:
                labels = trial
                break
        else:
            break
    return labels
