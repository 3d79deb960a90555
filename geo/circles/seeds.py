"""Reached pieces of every tier's circle, already sampled for the raster, in one compiled loop.

The same pieces as ``geo.circles.geometry.edge_reach`` + ``tier_intervals`` + ``substrings``
(partial edges cut at the remaining budget, the station's own edge from the snapped point,
overlapping parts of one edge united) and the same points as ``geo.circles.raster``'s
sampling, without the pandas groupby, sorts and temporaries: a numba loop per station over
the edges touching its reached nodes. Metres in the run's metric CRS; fractions are of an
edge's planar length, as ``tier_intervals`` takes them.

Each edge's sample points (its vertices and points splitting every segment into equal steps of
at most ``spacing`` m) are computed once per run (``EdgeSamples``, before the workers fork); a
piece [lo, hi] is its two end points (interpolated) and the edge's samples strictly between.
So consecutive points of a piece are at most ``spacing`` apart and lie on the edge: the points
are both the raster's seeds and the piece's exact polyline (``PieceIndex`` takes them).

Measured on the demo's 162 real circles (54 stations x 3 tiers, 870,191 points): 0.06-0.07 s
CPU against 0.14-0.19 s for the pandas pipeline plus its sampling (load 5-9, same session).
In a fresh process numba's first call costs 0.2-0.5 s once (``warm``, reported as ``jit_s``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from geo.circles.geometry import EdgeCoords


@dataclass
class EdgeSamples:
    """Edge e's samples are ``xy[off[e]:off[e + 1]]`` (m), ``s`` their planar distance (m)
    from the edge's start (the last one is the edge's planar length), ``vertex`` whether it
    is one of the edge's vertices; plus the adjacency of
    the network's nodes (``nodes`` sorted ids; node k's edges are ``adj[adj_off[k]:
    adj_off[k + 1]]``) and each edge's end node indices ``su``/``sv``."""

    xy: np.ndarray
    s: np.ndarray
    vertex: np.ndarray
    off: np.ndarray
    nodes: np.ndarray
    su: np.ndarray
    sv: np.ndarray
    adj_off: np.ndarray
    adj: np.ndarray

    @classmethod
    def build(cls, coords: EdgeCoords, source: np.ndarray, target: np.ndarray,
              spacing: float) -> EdgeSamples:
        """From the edges' vertices (m) and end node ids; ``spacing`` (m) > 0."""
        xy, off, cnt = coords.xy, coords.off, coords.cnt
        nv = len(xy)
        last = np.zeros(nv, bool)
        last[off + cnt - 1] = True
        nxt = np.minimum(np.arange(nv) + 1, nv - 1)
        step = np.where(last, 0.0, np.hypot(*(xy[nxt] - xy).T))
        cum = np.cumsum(step) - step  # distance from the first vertex of all, at each vertex
        edge_of = np.repeat(np.arange(len(off)), cnt)
        cum = cum - cum[off][edge_of]
        n = np.where(last, 1, np.maximum(1, np.ceil(step / spacing))).astype(np.int64)
        rep = np.repeat(np.arange(nv), n)
        t = (np.arange(len(rep)) - np.repeat(np.cumsum(n) - n, n)) / n[rep]
        pts = xy[rep] + t[:, None] * (xy[nxt] - xy)[rep]
        s = cum[rep] + t * step[rep]
        per_edge = np.bincount(edge_of, weights=n, minlength=len(off)).astype(np.int64)
        soff = np.r_[0, np.cumsum(per_edge)].astype(np.int64)
        nodes, inv = np.unique(np.r_[source, target], return_inverse=True)
        m = len(source)
        su, sv = inv[:m].astype(np.int64), inv[m:].astype(np.int64)
        ends = np.r_[su, sv]
        order = np.argsort(ends, kind="stable")
        adj = np.r_[np.arange(m), np.arange(m)][order].astype(np.int64)
        adj_off = np.r_[0, np.cumsum(np.bincount(ends, minlength=len(nodes)))].astype(np.int64)
        # an edge from a node to itself is listed twice: harmless (min of the same value)
        return cls(pts, s, t == 0, soff, nodes, su, sv, adj_off, adj)


@numba.njit(cache=True, nogil=True)
def _point(sxy: np.ndarray, ss: np.ndarray, a: int, b: int, x: float) -> tuple[float, float]:
    """The point at planar distance ``x`` along the edge whose samples are a..b-1 (the
    vertex itself at either end)."""
    if b - a == 1:
        return sxy[a, 0], sxy[a, 1]
    j = a
    while j < b - 2 and ss[j + 1] <= x:
        j += 1
    span = ss[j + 1] - ss[j]
    t = (x - ss[j]) / span if span > 0 else 0.0
    if t >= 1.0:
        return sxy[j + 1, 0], sxy[j + 1, 1]
    return (sxy[j, 0] + t * (sxy[j + 1, 0] - sxy[j, 0]),
            sxy[j, 1] + t * (sxy[j + 1, 1] - sxy[j, 1]))


@numba.njit(cache=True, nogil=True)
def _grow(a: np.ndarray, need: int) -> np.ndarray:
    if need <= a.shape[0]:
        return a
    out = np.empty((max(need, 2 * a.shape[0]),) + a.shape[1:], a.dtype)
    out[:a.shape[0]] = a
    return out


@numba.njit(cache=True, nogil=True)
def _touch(rows: range, row_node: np.ndarray, row_d: np.ndarray, su: np.ndarray,
           sv: np.ndarray, adj_off: np.ndarray, adj: np.ndarray, du: np.ndarray,
           dv: np.ndarray, seen: np.ndarray, touched: np.ndarray) -> int:
    """Metres to each end of every edge touching a reached node (``du``/``dv``, inf: not
    reached); the edges listed in ``touched`` (their count returned)."""
    nt = 0
    for r in rows:
        k, d = row_node[r], row_d[r]
        for a in range(adj_off[k], adj_off[k + 1]):
            e = adj[a]
            if not seen[e]:
                seen[e] = True
                touched[nt] = e
                nt += 1
            if su[e] == k and d < du[e]:
                du[e] = d
            if sv[e] == k and d < dv[e]:
                dv[e] = d
    return nt


@numba.njit(cache=True, nogil=True)
def _intervals(t: float, du: float, dv: float, ln: float, own: bool, frac: float, snap: float,
               lo3: np.ndarray, hi3: np.ndarray) -> int:
    """The reached parts [lo, hi] (fractions) of one edge at tier ``t`` m, as
    ``tier_intervals`` takes them (the part from each end within the budget, the whole edge
    when they meet, the station's own edge ``t - snap`` either side of ``frac``), united and
    sorted into ``lo3``/``hi3``; their count."""
    ni = 0
    fa = min(1.0, (t - du) / ln) if du < t else 0.0
    fb = min(1.0, (t - dv) / ln) if dv < t else 0.0
    if fa + fb >= 1.0:
        lo3[0], hi3[0] = 0.0, 1.0
        ni = 1
    else:
        if fa > 0:
            lo3[ni], hi3[ni] = 0.0, fa
            ni += 1
        if fb > 0:
            lo3[ni], hi3[ni] = 1.0 - fb, 1.0
            ni += 1
    if own and t > snap:
        half = (t - snap) / ln
        lo3[ni], hi3[ni] = max(0.0, frac - half), min(1.0, frac + half)
        ni += 1
    nk = 0
    for i in range(ni):  # drop empty parts, insertion-sort by lo
        if hi3[i] > lo3[i]:
            lo, hi = lo3[i], hi3[i]
            j = nk
            while j > 0 and lo3[j - 1] > lo:
                lo3[j], hi3[j] = lo3[j - 1], hi3[j - 1]
                j -= 1
            lo3[j], hi3[j] = lo, hi
            nk += 1
    out = 0
    for i in range(nk):  # unite overlapping or touching parts
        if out > 0 and lo3[i] <= hi3[out - 1]:
            hi3[out - 1] = max(hi3[out - 1], hi3[i])
        else:
            lo3[out], hi3[out] = lo3[i], hi3[i]
            out += 1
    return out


@numba.njit(cache=True, nogil=True)
def _emit(sxy: np.ndarray, ss: np.ndarray, svert: np.ndarray, a0: int, b0: int, xlo: float,
          xhi: float, xy: np.ndarray, corner: np.ndarray, npt: int) -> int:
    """Write the piece [xlo, xhi] (m along the edge whose samples are a0..b0-1) from ``npt``:
    its ends and the samples strictly between; ``corner``: an end or a vertex of the edge.
    Returns the new point count."""
    xy[npt, 0], xy[npt, 1] = _point(sxy, ss, a0, b0, xlo)
    corner[npt] = True
    npt += 1
    for j in range(a0, b0):
        if ss[j] > xlo and ss[j] < xhi:
            xy[npt, 0], xy[npt, 1] = sxy[j, 0], sxy[j, 1]
            corner[npt] = svert[j]
            npt += 1
    xy[npt, 0], xy[npt, 1] = _point(sxy, ss, a0, b0, xhi)
    corner[npt] = True
    return npt + 1


@numba.njit(cache=True, nogil=True)
def reached_pieces(row_off: np.ndarray, row_node: np.ndarray, row_d: np.ndarray,
                   own_edge: np.ndarray, own_frac: np.ndarray, own_snap: np.ndarray,
                   su: np.ndarray, sv: np.ndarray, adj_off: np.ndarray, adj: np.ndarray,
                   sxy: np.ndarray, ss: np.ndarray, svert: np.ndarray, soff: np.ndarray,
                   tiers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                               np.ndarray, np.ndarray, np.ndarray]:
    """Pieces of every tier's circle of each station m (rows ``row_off[m]:row_off[m + 1]``:
    reached node index, network metres; own edge index (-1: none), fraction, snap metres).

    Returns the points (k, 2) (m), whether each is a corner (a piece's end or an edge's
    vertex: the pieces without the samples between), each point's piece, each piece's
    circle, and per circle (only circles with a piece, by station then tier) its station
    position m, tier index and first point (plus one past the end: length circles + 1)."""
    n_edges = su.shape[0]
    du = np.full(n_edges, np.inf)
    dv = np.full(n_edges, np.inf)
    seen = np.zeros(n_edges, np.bool_)
    touched = np.empty(n_edges, np.int64)
    xy = np.empty((1024, 2))
    corner = np.empty(1024, np.bool_)
    ppt = np.empty(1024, np.int64)
    pcirc = np.empty(256, np.int64)
    c_st = np.empty(64, np.int64)
    c_tier = np.empty(64, np.int64)
    c_off = np.empty(65, np.int64)
    npt = npc = nc = 0
    lo3 = np.empty(3)
    hi3 = np.empty(3)
    for m in range(row_off.shape[0] - 1):
        nt = _touch(range(row_off[m], row_off[m + 1]), row_node, row_d, su, sv, adj_off, adj,
                    du, dv, seen, touched)
        oe = own_edge[m]
        if oe >= 0 and not seen[oe]:
            seen[oe] = True
            touched[nt] = oe
            nt += 1
        order = np.sort(touched[:nt])
        bound = 0  # points and pieces of this station's circles at most
        for e in order:
            bound += soff[e + 1] - soff[e] + 6
        bound *= tiers.shape[0]
        xy = _grow(xy, npt + bound)
        corner = _grow(corner, npt + bound)
        ppt = _grow(ppt, npt + bound)
        pcirc = _grow(pcirc, npc + bound)
        c_st = _grow(c_st, nc + tiers.shape[0])
        c_tier = _grow(c_tier, nc + tiers.shape[0])
        c_off = _grow(c_off, nc + tiers.shape[0] + 1)
        for ti in range(tiers.shape[0]):
            first_piece, first_pt = npc, npt
            for e in order:
                a0, b0 = soff[e], soff[e + 1]
                ln = ss[b0 - 1]
                k = _intervals(tiers[ti], du[e], dv[e], ln, e == oe, own_frac[m], own_snap[m],
                               lo3, hi3)
                for i in range(k):
                    end = _emit(sxy, ss, svert, a0, b0, lo3[i] * ln, hi3[i] * ln, xy, corner,
                                npt)
                    ppt[npt:end] = npc
                    npt = end
                    pcirc[npc] = nc
                    npc += 1
            if npc > first_piece:
                c_st[nc], c_tier[nc], c_off[nc] = m, ti, first_pt
                nc += 1
        for i in range(nt):
            e = touched[i]
            seen[e] = False
            du[e] = np.inf
            dv[e] = np.inf
    c_off[nc] = npt
    return (xy[:npt], corner[:npt], ppt[:npt], pcirc[:npc], c_st[:nc], c_tier[:nc],
            c_off[:nc + 1])


def warm(cell: float) -> None:
    """Call the compiled loops once on a one-edge network: in a fresh process numba's first
    call costs ~0.2-0.4 s (LLVM and the cache load) whatever the size; done in the parent
    before the workers fork, they inherit the loaded code."""
    from geo.circles.geometry import warm_near
    from geo.circles.raster import circle_field, thin_rings

    def i64(v: list[int]) -> np.ndarray:
        return np.array(v, np.int64)

    xy, *_ = reached_pieces(
        i64([0, 1]), i64([0]), np.zeros(1), i64([0]), np.full(1, 0.5), np.zeros(1), i64([0]),
        i64([1]), i64([0, 1, 2]), i64([0, 0]), np.array([[0.0, 0.0], [10.0, 0.0]]),
        np.array([0.0, 10.0]), np.ones(2, np.bool_), i64([0, 2]), np.array([5.0]))
    circle_field(xy, cell, cell)
    thin_rings(np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]), i64([0, 4]), 0.5)
    warm_near()
