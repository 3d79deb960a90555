"""Circle polygons by rasterising the reached network and tracing a contour (grid isochrones).

All coordinates are metres in the district's metric CRS; cells belong to one global grid
(cell (i, j) covers ``[i * cell, (i + 1) * cell)`` in x, the same in y).

For one circle (its reached pieces, partial edges already cut at the remaining budget):

1. The pieces come sampled every ``cell`` metres or closer (``geo.circles.seeds``, one
   compiled loop from the search's answer); each sample marks its cell as a
   seed and the cell remembers the sample's exact coordinates (one per cell is kept, so denser
   sampling buys nothing: the distance to the samples differs from the distance to the line
   by the sagitta, ~(cell / 2)^2 / (2 * buffer), 0.1 m at 5 m cells and a 30 m buffer).
2. An exact Euclidean feature transform (Felzenszwalb and Huttenlocher's separable lower
   envelope, compiled with numba: half the time of ``scipy.ndimage.distance_transform_edt``
   with indices, the same distances) gives every cell of the circle's window its nearest seed
   cell; the field is the exact distance
   from the cell centre to that seed's sample, so the contour lands well inside a cell (the
   nearest-cell choice errs only to second order).
3. ``contourpy`` traces the filled contour ``field <= buffer_m`` (marching squares, linear
   interpolation), built into MultiPolygons with ``shapely.from_ragged_array``.

The barrier rule is then applied to these polygons exactly as to the exact buffer
(``geo.circles.geometry.cut_barrier``). The exact buffer of the pieces
(``geo.circles.geometry.circle_polygons``) stays available (``circle_polygon_method=exact``); the
tests and the bench measure IoU and building verdicts against it.

Measured on the demo's 162 real circles (3.9 M cells): the feature transform and field 0.065 s
CPU against 0.13 s for scipy's EDT alone plus 0.05 s for the gathers; the contour 0.03 s with
the generator built directly (0.08 s through ``contour_generator``). Min IoU against the exact
buffer 0.9769, building verdicts 99.82 % equal, as before (load 5-9).
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
import shapely
from contourpy import FillType, LineType, SerialContourGenerator, ZInterp


@numba.njit(cache=True, nogil=True)
def _seed_grid(pts: np.ndarray, cell: float, pad: int) -> tuple[int, int, np.ndarray,
                                                                np.ndarray, np.ndarray]:
    """The circle's window (first column ``i0`` and row ``j0`` of the global grid, padded by
    ``pad`` cells), its free cells (no sample), and per seed cell the x and y (float32, m from
    the window's corner) of its sample (the last one given wins)."""
    n = pts.shape[0]
    ii = np.empty(n, np.int64)
    jj = np.empty(n, np.int64)
    for k in range(n):
        ii[k] = int(math.floor(pts[k, 0] / cell))
        jj[k] = int(math.floor(pts[k, 1] / cell))
    i0, j0 = ii.min() - pad, jj.min() - pad
    w, h = ii.max() + pad + 1 - i0, jj.max() + pad + 1 - j0
    free = np.ones((h, w), np.bool_)
    sx = np.zeros((h, w), np.float32)
    sy = np.zeros((h, w), np.float32)
    for k in range(n):
        li, lj = ii[k] - i0, jj[k] - j0
        free[lj, li] = False
        sx[lj, li] = pts[k, 0] - i0 * cell
        sy[lj, li] = pts[k, 1] - j0 * cell
    return i0, j0, free, sx, sy


_FAR = 1 << 40  # squared cells: no seed in the column


@numba.njit(cache=True, nogil=True)
def _columns(free: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per cell, the squared distance (cells) to the nearest seed of its column and that
    seed's row (``_FAR`` and -1 without one): two sweeps per column."""
    h, w = free.shape
    gv = np.empty((h, w), np.int64)
    gr = np.empty((h, w), np.int32)
    for i in range(w):
        last = -1
        for j in range(h):
            if not free[j, i]:
                last = j
            gv[j, i] = (j - last) * (j - last) if last >= 0 else _FAR
            gr[j, i] = last
        last = -1
        for j in range(h - 1, -1, -1):
            if not free[j, i]:
                last = j
            if last >= 0 and (last - j) * (last - j) < gv[j, i]:
                gv[j, i] = (last - j) * (last - j)
                gr[j, i] = last
    return gv, gr


@numba.njit(cache=True, nogil=True)
def _field(free: np.ndarray, sx: np.ndarray, sy: np.ndarray, i0: int, j0: int,
           cell: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distance (m) from each cell centre to the sample of its nearest seed cell, and the
    cell centres' x and y (m). The nearest seed cell is exact (Felzenszwalb and
    Huttenlocher's lower envelope of parabolas along each row over ``_columns``), the
    distance to the sample computed in float32 from the window's corner (exact to ~1 mm)."""
    h, w = free.shape
    gv, gr = _columns(free)
    field = np.full((h, w), np.inf)
    gx = np.empty((h, w))
    gy = np.empty((h, w))
    v = np.empty(w, np.int64)
    z = np.empty(w + 1)
    for j in range(h):
        k = -1  # the envelope: parabolas v[0..k], v[r] lowest on [z[r], z[r + 1]]
        for q in range(w):
            if gv[j, q] >= _FAR:
                continue
            s = -np.inf
            while k >= 0:
                p = v[k]
                s = ((gv[j, q] + q * q) - (gv[j, p] + p * p)) / (2.0 * (q - p))
                if s > z[k]:
                    break
                k -= 1
            k += 1
            v[k] = q
            z[k] = s if k > 0 else -np.inf
            z[k + 1] = np.inf
        ly = np.float32((j + 0.5) * cell)
        r = 0
        for q in range(w):
            gx[j, q] = (i0 + q + 0.5) * cell
            gy[j, q] = (j0 + j + 0.5) * cell
            if k < 0:
                continue
            while z[r + 1] < q:
                r += 1
            a, b = gr[j, v[r]], v[r]
            dx = np.float32((q + 0.5) * cell) - sx[a, b]
            dy = ly - sy[a, b]
            field[j, q] = math.sqrt(dx * dx + dy * dy)
    return field, gx, gy


def circle_field(pts: np.ndarray, cell: float, buffer_m: float) -> tuple[
        np.ndarray, np.ndarray, np.ndarray]:
    """Distance (m) from each cell centre of the circle's window to the nearest reached
    sample ``pts`` (m) (via the nearest seed cell), and the cell-centre x and y (m, 2-D);
    cells of a global grid (origin 0)."""
    pad = int(math.ceil(buffer_m / cell)) + 2
    i0, j0, free, sx, sy = _seed_grid(pts, cell, pad)
    return _field(free, sx, sy, i0, j0, cell)


def trace(field: np.ndarray, gx: np.ndarray, gy: np.ndarray,
          buffer_m: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The filled contour ``field <= buffer_m`` as polygons: per polygon its closed rings'
    points and ring offsets (first ring the shell), from contourpy (marching squares). The
    generator is built directly: the field is finite float64 and the grid 2-D already, so
    ``contour_generator``'s mask and grid preparation would only copy."""
    h, w = field.shape
    no_mask: Any = None  # what contour_generator passes for an unmasked z (its stub says array)
    gen = SerialContourGenerator(gx, gy, field, no_mask, corner_mask=True,
                                 line_type=LineType.Separate, fill_type=FillType.OuterOffset,
                                 quad_as_tri=False, z_interp=ZInterp.Linear,
                                 x_chunk_size=w - 1, y_chunk_size=h - 1)
    filled = gen.filled(-1.0, buffer_m)
    points = [np.asarray(p) for p in filled[0] if p is not None]
    offsets = [np.asarray(o) for o in filled[1] if o is not None]
    return points, offsets


def raster_polygons(pts: np.ndarray, bounds: np.ndarray, cell: float, buffer_m: float,
                    tolerance: float = 0.0) -> np.ndarray:
    """MultiPolygons (m) of ``len(bounds) - 1`` circles from their reached pieces' points
    (``pts`` m, at most ``cell`` apart along each piece: ``geo.circles.seeds``), circle k's
    being ``pts[bounds[k]:bounds[k + 1]]``; an empty polygon where a circle has none. With a
    ``tolerance`` (m), each ring is simplified (Douglas-Peucker, ``thin_rings``); a circle that
    this leaves invalid (rare: two rings closer than the tolerance) is simplified again by
    GEOS with its topology preserved."""
    n = len(bounds) - 1
    coords: list[np.ndarray] = []
    ring_off, poly_off, multi_off = [0], [0], [0]
    for k in range(n):
        a, b = bounds[k], bounds[k + 1]
        if a < b:
            field, gx, gy = circle_field(pts[a:b], cell, buffer_m)
            points, offsets = trace(field, gx, gy, buffer_m)
            for p, o in zip(points, offsets, strict=True):
                coords.append(p)
                ring_off.extend((ring_off[-1] + o[1:]).tolist())
                poly_off.append(len(ring_off) - 1)
        multi_off.append(len(poly_off) - 1)
    if not coords:
        return np.array([shapely.MultiPolygon()] * n, dtype=object)
    xy, rings = np.concatenate(coords), np.asarray(ring_off, np.int64)
    parts = (np.asarray(poly_off, np.int64), np.asarray(multi_off, np.int64))
    if tolerance <= 0:
        return _multipolygons(xy, rings, parts)
    keep = thin_rings(xy, rings, tolerance)
    kept = np.concatenate([[0], np.cumsum(keep)])
    polygons = _multipolygons(xy[keep], kept[rings], parts)
    bad = np.nonzero(~shapely.is_valid(polygons))[0]
    if len(bad):
        polygons[bad] = shapely.simplify(_multipolygons(xy, rings, parts)[bad], tolerance)
    return polygons


def _multipolygons(xy: np.ndarray, rings: np.ndarray,
                   parts: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    polygons: np.ndarray = shapely.from_ragged_array(
        shapely.GeometryType.MULTIPOLYGON, xy, (rings, *parts))
    return polygons


@numba.njit(cache=True, nogil=True)
def thin_rings(xy: np.ndarray, rings: np.ndarray, tolerance: float) -> np.ndarray:
    """Which points (m) of the closed rings ``xy[rings[r]:rings[r + 1]]`` Douglas-Peucker
    keeps at ``tolerance`` (m): each ring cut at its point farthest from its first one, both
    halves simplified; a ring left with fewer than 4 points keeps them all. Written here for
    speed: GEOS's simplifier also rebuilds each polygon (a zero buffer), 23 ms a run of the
    demo's 162 circles against ~2 ms here."""
    keep = np.zeros(xy.shape[0], np.bool_)
    stack = np.empty((xy.shape[0], 2), np.int64)
    for r in range(rings.shape[0] - 1):
        a, b = rings[r], rings[r + 1] - 1  # xy[b] repeats xy[a]
        if b - a < 4:
            keep[a:b + 1] = True
            continue
        far, best = a, -1.0
        for i in range(a + 1, b):
            d = (xy[i, 0] - xy[a, 0]) ** 2 + (xy[i, 1] - xy[a, 1]) ** 2
            if d > best:
                far, best = i, d
        keep[a] = keep[far] = keep[b] = True
        stack[0, 0], stack[0, 1], stack[1, 0], stack[1, 1] = a, far, far, b
        top = 2
        while top:
            top -= 1
            i, j = stack[top, 0], stack[top, 1]
            dx, dy = xy[j, 0] - xy[i, 0], xy[j, 1] - xy[i, 1]
            length2 = dx * dx + dy * dy
            worst, at = -1.0, -1
            for m in range(i + 1, j):  # distance to the segment (not its line), as GEOS
                ex, ey = xy[m, 0] - xy[i, 0], xy[m, 1] - xy[i, 1]
                u = min(1.0, max(0.0, (ex * dx + ey * dy) / length2)) if length2 > 0 else 0.0
                d = math.hypot(ex - u * dx, ey - u * dy)
                if d > worst:
                    worst, at = d, m
            if at >= 0 and worst > tolerance:
                keep[at] = True
                stack[top, 0], stack[top, 1], stack[top + 1, 0], stack[top + 1, 1] = i, at, at, j
                top += 2
        if keep[a:b + 1].sum() < 4:
            keep[a:b + 1] = True
    return keep
