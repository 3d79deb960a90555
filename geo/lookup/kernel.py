"""The arithmetic of a batch lookup in one compiled loop (numba): lattice cell, then label.

A point's lattice cell is ``trunc((lon - x0) * inv_cx)``, ``trunc((lat - y0) * inv_cy)``:
the same float operations as the array code, so the same cells (truncation toward zero maps
(-1, 0) to the empty padding column 0; NaN, infinities and values beyond the lattice are
outside). Without numba each point makes ~30 passes over arrays of the batch; here one pass,
no temporaries. Exact edge tests stay with numpy (``geo.lookup.cells``). WGS 84 degrees.
"""

from __future__ import annotations

import numba
import numpy as np

NONE = -1


@numba.njit(cache=True, nogil=True)
def _cell(v: float, v0: float, inv: float, n: int) -> int:
    f = (v - v0) * inv
    if f > -1.0 and f < n:  # False for NaN
        return int(f)
    return -1


@numba.njit(cache=True, nogil=True)
def _gather(table: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """``table[cell]``, NONE where cell < 0: a loop of independent loads (the CPU overlaps
    their cache misses; one fused loop per point would wait on each in turn)."""
    out = np.empty(cell.size, dtype=np.int64)
    for i in range(cell.size):
        c = cell[i]
        out[i] = table[c] if c >= 0 else NONE
    return out


@numba.njit(cache=True, nogil=True)
def _cells(lon: np.ndarray, lat: np.ndarray, x0: float, y0: float, inv_cx: float,
           inv_cy: float, nx: int, ny: int) -> np.ndarray:
    cell = np.empty(lon.size, dtype=np.int64)
    for i in range(lon.size):
        ix = _cell(lon[i], x0, inv_cx, nx)
        iy = _cell(lat[i], y0, inv_cy, ny)
        cell[i] = iy * nx + ix if ix >= 0 and iy >= 0 else -1
    return cell


@numba.njit(cache=True, nogil=True)
def lattice_labels(lon: np.ndarray, lat: np.ndarray, x0: float, y0: float, inv_cx: float,
                   inv_cy: float, nx: int, ny: int, labels: np.ndarray) -> np.ndarray:
    """``labels`` of each point's cell in one lattice, NONE outside it (int64)."""
    return _gather(labels, _cells(lon, lat, x0, y0, inv_cx, inv_cy, nx, ny))


@numba.njit(cache=True, nogil=True)
def _part_cells(lon: np.ndarray, lat: np.ndarray, d: np.ndarray, p_x0: np.ndarray,
                p_y0: np.ndarray, p_icx: np.ndarray, p_icy: np.ndarray, p_nx: np.ndarray,
                p_ny: np.ndarray, l_off: np.ndarray) -> np.ndarray:
    """Cell in ``labels_all`` of each point in district ``d[i]``'s lattice, -1 where d < 0
    or outside that lattice."""
    cell = np.empty(lon.size, dtype=np.int64)
    for i in range(lon.size):
        k = d[i]
        cell[i] = -1
        if k >= 0:
            nx = p_nx[k]
            jx = _cell(lon[i], p_x0[k], p_icx[k], nx)
            jy = _cell(lat[i], p_y0[k], p_icy[k], p_ny[k])
            if jx >= 0 and jy >= 0:
                cell[i] = l_off[k] + jy * nx + jx
    return cell


@numba.njit(cache=True, nogil=True)
def parts_labels(lon: np.ndarray, lat: np.ndarray, d: np.ndarray, p_x0: np.ndarray,
                 p_y0: np.ndarray, p_icx: np.ndarray, p_icy: np.ndarray, p_nx: np.ndarray,
                 p_ny: np.ndarray, l_off: np.ndarray, labels_all: np.ndarray) -> np.ndarray:
    """Label of each point in district ``d[i]``'s lattice (global grid index, NONE, or
    -2 - global slot); NONE where d < 0 or outside that lattice."""
    return _gather(labels_all, _part_cells(lon, lat, d, p_x0, p_y0, p_icx, p_icy, p_nx,
                                           p_ny, l_off))


@numba.njit(cache=True, nogil=True)
def city_labels(lon: np.ndarray, lat: np.ndarray, dx0: float, dy0: float, dicx: float,
                dicy: float, dnx: int, dny: int, dlabels: np.ndarray, p_x0: np.ndarray,
                p_y0: np.ndarray, p_icx: np.ndarray, p_icy: np.ndarray, p_nx: np.ndarray,
                p_ny: np.ndarray, l_off: np.ndarray,
                labels_all: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(district label, grid label) per point: the district lattice's label (part index,
    NONE, or -2 - slot of its border cell), and for points in a district's inner cell its
    label in that district's lattice (``parts_labels``); NONE for the others."""
    d = lattice_labels(lon, lat, dx0, dy0, dicx, dicy, dnx, dny, dlabels)
    return d, parts_labels(lon, lat, d, p_x0, p_y0, p_icx, p_icy, p_nx, p_ny, l_off,
                           labels_all)


@numba.njit(cache=True, nogil=True)
def cell_test(x: np.ndarray, y: np.ndarray, slot: np.ndarray, rx: np.ndarray, ry: np.ndarray,
              c_start: np.ndarray, c_count: np.ndarray, ce_edge: np.ndarray, ce_j: np.ndarray,
              ce_side: np.ndarray, ref_in: np.ndarray, b_start: np.ndarray,
              b_count: np.ndarray, cand_grid: np.ndarray,
              e_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(grid, degenerate) per point in boundary cell ``slot`` (``geo.lookup.cells``): inside
    candidate j when the centre is (``ref_in``) XOR the segment point-centre crosses j's
    edges through the cell an odd number of times, or when the point lies on one of them
    (exact zero cross product, within the edge's box). The smallest candidate holding it,
    -1 if none; degenerate: the segment passes through a vertex or the centre lies on an
    edge's line (the caller runs the full even-odd test)."""
    n = x.size
    out = np.full(n, NONE, dtype=np.int64)
    degenerate = np.zeros(n, dtype=np.bool_)
    most = 1
    for i in range(n):
        most = max(most, b_count[slot[i]])
    flip = np.zeros(most, dtype=np.bool_)
    on = np.zeros(most, dtype=np.bool_)
    for i in range(n):
        s = slot[i]
        px, py = x[i], y[i]
        cx, cy = rx[s], ry[s]
        nc = b_count[s]
        flip[:nc] = False
        on[:nc] = False
        bad = False
        for r in range(c_start[s], c_start[s] + c_count[s]):
            sr = ce_side[r]
            if sr == 0:
                bad = True
                break
            e = ce_edge[r]
            x1, y1, x2, y2 = e_xy[e, 0], e_xy[e, 1], e_xy[e, 2], e_xy[e, 3]
            j = ce_j[r]
            o_p = (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)
            if o_p == 0.0:
                if min(x1, x2) <= px <= max(x1, x2) and min(y1, y2) <= py <= max(y1, y2):
                    on[j] = True
            elif o_p * sr < 0.0:
                dx, dy = cx - px, cy - py
                q_a = dx * (y1 - py) - dy * (x1 - px)
                q_b = dx * (y2 - py) - dy * (x2 - px)
                if q_a == 0.0 or q_b == 0.0:
                    bad = True
                    break
                if (q_a > 0.0) != (q_b > 0.0):
                    flip[j] = not flip[j]
        if bad:
            degenerate[i] = True
            continue
        b0 = b_start[s]
        for j in range(nc):
            if on[j] or ref_in[b0 + j] != flip[j]:
                out[i] = cand_grid[b0 + j]
                break
    return out, degenerate
