"""Circle polygons by rasterising the reached network and tracing a contour (grid isochrones).

All coordinates are metres in the district's metric CRS; cells belong to one global grid
(cell (i, j) covers ``[i * cell, (i + 1) * cell)`` in x, the same in y).

For one circle (its reached pieces, partial edges already cut at the remaining budget):

1. The pieces are sampled every ``cell`` metres or closer; each sample marks its cell as a
   seed and the cell remembers the sample's exact coordinates (one per cell is kept, so denser
   sampling buys nothing: the distance to the samples differs from the distance to the line
   by the sagitta, ~(cell / 2)^2 / (2 * buffer), 0.1 m at 5 m cells and a 30 m buffer).
2. A Euclidean feature transform (``scipy.ndimage.distance_transform_edt`` with indices) gives
   every cell of the circle's window its nearest seed cell; the field is the exact distance
   from the cell centre to that seed's sample, so the contour lands well inside a cell (the
   nearest-cell choice errs only to second order).
3. ``contourpy`` traces the filled contour ``field <= buffer_m`` (marching squares, linear
   interpolation), built into MultiPolygons with ``shapely.from_ragged_array``.

The barrier rule is then applied to these polygons exactly as to the exact buffer
(``geo.circles.geometry.cut_barrier``). The exact buffer of the pieces
(``geo.circles.geometry.circle_polygons``) stays available (``circle_polygon_method=exact``); the
tests and the bench measure IoU and building verdicts against it.
"""

from __future__ import annotations

import math

import contourpy
import numpy as np
import shapely
from scipy import ndimage


def sample_lines(xy: np.ndarray, piece: np.ndarray, spacing: float) -> tuple[np.ndarray,
                                                                            np.ndarray]:
    """Points every ``spacing`` m or closer along each piece (vertices as ``substrings`` gives
    them: sorted by piece, then along it), both ends included; and each point's piece (the
    points come sorted by piece)."""
    if len(xy) == 0:
        return np.zeros((0, 2)), np.zeros(0, np.int64)
    same = piece[1:] == piece[:-1]
    a, b, pc = xy[:-1][same], xy[1:][same], piece[:-1][same]
    # a piece's last segment also gives its end point (t == 1)
    last = np.r_[pc[1:] != pc[:-1], True] if len(pc) else np.zeros(0, bool)
    n = np.maximum(1, np.ceil(np.hypot(*(b - a).T) / spacing)).astype(np.int64)
    m = n + last
    rep = np.repeat(np.arange(len(a)), m)
    t = (np.arange(len(rep)) - np.repeat(np.cumsum(m) - m, m)) / n[rep]
    pts = a[rep] + t[:, None] * (b - a)[rep]
    return pts, pc[rep]


def circle_field(pts: np.ndarray, cell: float, buffer_m: float) -> tuple[
        np.ndarray, np.ndarray, np.ndarray]:
    """Distance (m) from each cell centre of the circle's window to the nearest reached
    sample ``pts`` (m), and the cell-centre x and y (m); cells of a global grid (origin 0).
    The distances are computed in float32 from the window's corner (exact to ~1 mm)."""
    ii = np.floor(pts[:, 0] / cell).astype(np.int64)
    jj = np.floor(pts[:, 1] / cell).astype(np.int64)
    pad = int(math.ceil(buffer_m / cell)) + 2
    i0, i1, j0, j1 = ii.min() - pad, ii.max() + pad + 1, jj.min() - pad, jj.max() + pad + 1
    li, lj = ii - i0, jj - j0
    free = np.ones((j1 - j0, i1 - i0), bool)
    free[lj, li] = False
    sx = np.empty(free.shape, np.float32)
    sy = np.empty(free.shape, np.float32)
    sx[lj, li] = pts[:, 0] - i0 * cell
    sy[lj, li] = pts[:, 1] - j0 * cell
    fj, fi = ndimage.distance_transform_edt(free, return_distances=False, return_indices=True)
    lx = ((np.arange(i1 - i0) + 0.5) * cell).astype(np.float32)
    ly = ((np.arange(j1 - j0) + 0.5) * cell).astype(np.float32)
    field = np.hypot(lx[None, :] - sx[fj, fi], ly[:, None] - sy[fj, fi])
    return field, (np.arange(i0, i1) + 0.5) * cell, (np.arange(j0, j1) + 0.5) * cell


def trace(field: np.ndarray, cx: np.ndarray, cy: np.ndarray,
          buffer_m: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The filled contour ``field <= buffer_m`` as polygons: per polygon its closed rings'
    points and ring offsets (first ring the shell), from contourpy (marching squares)."""
    gen = contourpy.contour_generator(cx, cy, field, fill_type=contourpy.FillType.OuterOffset)
    filled = gen.filled(-1.0, buffer_m)
    points = [np.asarray(p) for p in filled[0] if p is not None]
    offsets = [np.asarray(o) for o in filled[1] if o is not None]
    return points, offsets


def raster_polygons(
    xy: np.ndarray, piece: np.ndarray, circle: np.ndarray, n: int, cell: float,
    buffer_m: float,
) -> np.ndarray:
    """MultiPolygons (m) of ``n`` circles from their pieces' vertices (``xy``, ``piece``) and
    each piece's circle (``circle``, sorted); an empty polygon where a circle has none."""
    pts, pp = sample_lines(xy, piece, cell)
    pc = circle[pp]
    bounds = np.searchsorted(pc, np.arange(n + 1))
    coords: list[np.ndarray] = []
    ring_off, poly_off, multi_off = [0], [0], [0]
    for k in range(n):
        a, b = bounds[k], bounds[k + 1]
        if a < b:
            field, cx, cy = circle_field(pts[a:b], cell, buffer_m)
            points, offsets = trace(field, cx, cy, buffer_m)
            for p, o in zip(points, offsets, strict=True):
                coords.append(p)
                ring_off.extend((ring_off[-1] + o[1:]).tolist())
                poly_off.append(len(ring_off) - 1)
        multi_off.append(len(poly_off) - 1)
    if not coords:
        return np.array([shapely.MultiPolygon()] * n, dtype=object)
    polygons: np.ndarray = shapely.from_ragged_array(
        shapely.GeometryType.MULTIPOLYGON, np.concatenate(coords),
        (np.asarray(ring_off, np.int64), np.asarray(poly_off, np.int64),
         np.asarray(multi_off, np.int64)))
    return polygons
