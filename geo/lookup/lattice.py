"""The lattice of a lookup index: cells over the grids' bounds, boundary cells marked.

A **lattice** of cells covers the grids' bounds (about ``cells_per_grid`` cells a grid, at most
``max_cells``). Every cell that a grid boundary passes through is marked (conservatively: each
boundary segment is cut into pieces shorter than half a cell and the 2x2 cells around each
piece are marked). The unmarked cells fall into 4-connected regions that no boundary crosses,
so each region lies wholly inside one grid or outside all of them; one point per region,
looked up in the STRtree, labels it. Points in marked (boundary) cells are answered by an exact
edge test against the grids crossing the cell, else by the STRtree. Coordinates are WGS 84
degrees.
"""

from __future__ import annotations

import math

import numpy as np
import shapely
from scipy import ndimage

from geo.lookup.cells import CellEdges, build_cell_edges, cell_lookup
from geo.lookup.settings import LookupSettings

NONE, BOUNDARY = -1, -2


class Lattice:
    """Lattice building and the exact fallbacks; ``LookupIndex`` sets the grids first."""

    grid_codes: list[str]
    grid_wkb: list[bytes]
    grid_geoms: np.ndarray
    district_wkb: list[bytes]
    tree: shapely.STRtree
    settings: LookupSettings
    x0: float
    y0: float
    nx: int
    ny: int
    inv_cx: float
    inv_cy: float
    labels: np.ndarray
    cand_grid: np.ndarray
    b_cells: np.ndarray
    b_start: np.ndarray
    b_count: np.ndarray
    e_xy: np.ndarray
    e_x1: np.ndarray
    e_y1: np.ndarray
    e_x2: np.ndarray
    e_y2: np.ndarray
    e_start: np.ndarray
    e_count: np.ndarray
    e_grid: np.ndarray
    cells: CellEdges
    boundary_cell_share: float
    nbytes: int

    def _build_lattice(self, settings: LookupSettings) -> None:
        n = len(self.grid_codes)
        minx, miny, maxx, maxy = shapely.total_bounds(self.grid_geoms)
        cover = getattr(self, "lattice_cover", None)
        if cover is not None:  # also cover these bounds (a district's: see CityIndex)
            minx, miny = min(minx, cover[0]), min(miny, cover[1])
            maxx, maxy = max(maxx, cover[2]), max(maxy, cover[3])
        pad_x = (maxx - minx) * 1e-6 + 1e-9
        pad_y = (maxy - miny) * 1e-6 + 1e-9
        minx, miny, maxx, maxy = minx - pad_x, miny - pad_y, maxx + pad_x, maxy + pad_y
        cells = int(min(max(n * settings.cells_per_grid, 4096), settings.max_cells))
        kx = math.cos(math.radians((miny + maxy) / 2))  # square cells in metres
        w, h = (maxx - minx) * kx, maxy - miny
        side = math.sqrt(w * h / cells)
        nx = max(1, int(math.ceil(w / side)))
        ny = max(1, int(math.ceil(h / side)))
        cx, cy = (maxx - minx) / nx, (maxy - miny) / ny
        # One empty cell of padding all round: truncation toward zero then maps (-1, 0) to the
        # empty column 0, so a float->int cast alone serves as floor for every in-range point.
        nx, ny = nx + 2, ny + 2
        # plain floats: a huge coordinate then gives inf (outside), not a numpy overflow warning
        self.x0, self.y0, self.nx, self.ny = float(minx - cx), float(miny - cy), nx, ny
        self.inv_cx = float(1.0 / cx)
        self.inv_cy = float(1.0 / cy)
        self._build_edges()
        edge_keys = self._edge_keys(np.arange(n))
        self._set_boundary(self._grid_keys(edge_keys))
        labels = np.empty(ny * nx, dtype=np.int32)
        self._label_window(labels, 0, nx, 0, ny)
        self._finish_lattice(labels, edge_keys)

    def _incremental_plan(self, prev: Lattice | None, settings: LookupSettings
                          ) -> tuple[tuple[float, float, float, float], np.ndarray] | None:
        """(window, remap) for ``_update_lattice`` when ``prev`` can be patched: same district
        and lattice settings, at most ``incremental_max_grids`` grids added, removed or
        reshaped, all inside prev's lattice. None: build from scratch."""
        if prev is None or prev.district_wkb != self.district_wkb \
                or prev.settings.cells_per_grid != settings.cells_per_grid \
                or prev.settings.max_cells != settings.max_cells:
            return None
        old = {code: j for j, code in enumerate(prev.grid_codes)}
        remap = np.full(len(prev.grid_codes), -1, dtype=np.int32)
        changed_new: list[int] = []
        for i, code in enumerate(self.grid_codes):
            j = old.pop(code, None)
            if j is not None and prev.grid_wkb[j] == self.grid_wkb[i]:
                remap[j] = i
            else:
                changed_new.append(i)
        changed_old = np.flatnonzero(remap < 0)
        if len(changed_new) + changed_old.size > settings.incremental_max_grids:
            return None
        geoms = np.concatenate((self.grid_geoms[changed_new], prev.grid_geoms[changed_old]))
        if geoms.size == 0:
            return (prev.x0, prev.y0, prev.x0, prev.y0), remap
        minx, miny, maxx, maxy = (float(v) for v in shapely.total_bounds(geoms))
        window = (minx, miny, maxx, maxy)
        inner = shapely.box(prev.x0 + 1 / prev.inv_cx, prev.y0 + 1 / prev.inv_cy,
                            prev.x0 + (prev.nx - 1) / prev.inv_cx,
                            prev.y0 + (prev.ny - 1) / prev.inv_cy)
        if not shapely.contains(inner, shapely.box(*window)):
            return None
        return window, remap

    def _update_lattice(self, prev: Lattice, window: tuple[float, float, float, float],
                        remap: np.ndarray) -> None:
        """The lattice of ``prev`` with only the cells in ``window`` (a WGS 84 box holding
        every changed grid, old and new) recomputed; ``remap`` maps prev's grid indices to
        this index's (-1: gone, only ever inside the window)."""
        n = len(self.grid_codes)
        self.x0, self.y0, self.nx, self.ny = prev.x0, prev.y0, prev.nx, prev.ny
        self.inv_cx, self.inv_cy = prev.inv_cx, prev.inv_cy
        nx, ny = self.nx, self.ny
        minx, miny, maxx, maxy = window
        cx0 = max(int((minx - self.x0) * self.inv_cx) - 1, 0)
        cx1 = min(int((maxx - self.x0) * self.inv_cx) + 2, nx)
        cy0 = max(int((miny - self.y0) * self.inv_cy) - 1, 0)
        cy1 = min(int((maxy - self.y0) * self.inv_cy) + 2, ny)
        self._build_edges()
        # prev's boundary candidates outside the window, renumbered; new ones inside it
        cells = np.repeat(prev.b_cells, prev.b_count)
        col, row = cells % nx, cells // nx
        outside = (col < cx0) | (col >= cx1) | (row < cy0) | (row >= cy1)
        kept_grid = remap[prev.cand_grid[outside]].astype(np.int64)
        labels = prev.labels.copy()
        interior = labels >= 0
        renumbered = remap[labels[interior]]
        labels[interior] = renumbered
        gone = np.zeros(labels.size, dtype=bool)
        gone[interior] = renumbered < 0
        gone.reshape(ny, nx)[cy0:cy1, cx0:cx1] = False
        if (kept_grid < 0).any() or gone.any():
            self._build_lattice(self.settings)  # a changed grid reached outside the window
            return
        del interior, renumbered, gone
        kept = cells[outside] * n + kept_grid
        box = shapely.box(self.x0 + cx0 / self.inv_cx, self.y0 + cy0 / self.inv_cy,
                          self.x0 + cx1 / self.inv_cx, self.y0 + cy1 / self.inv_cy)
        near = np.sort(self.tree.query(box))
        fresh = self._grid_keys(self._edge_keys(near))
        cells = fresh // n
        col, row = cells % nx, cells // nx
        fresh = fresh[(col >= cx0) & (col < cx1) & (row >= cy0) & (row < cy1)]
        keys = np.concatenate((kept, fresh))
        keys.sort()
        self._set_boundary(keys)
        self._label_window(labels, cx0, cx1, cy0, cy1)
        self._finish_lattice(labels, self._edge_keys(np.arange(n)))

    def _build_edges(self) -> None:
        """Every grid's boundary edges (all rings), grouped by grid: the exact fallback test."""
        n = len(self.grid_codes)
        rings, grid_of_ring = shapely.get_parts(shapely.boundary(self.grid_geoms),
                                                return_index=True)
        xy, ring_of = shapely.get_coordinates(rings, return_index=True)
        same = ring_of[1:] == ring_of[:-1]
        e_grid = grid_of_ring[ring_of[:-1][same]]
        order = np.argsort(e_grid, kind="stable")
        # One (edges, 4) array, x1 y1 x2 y2 per row: a grid's edges are one slice (one
        # ``tolist`` for the single-point paths); the column views serve the array paths.
        self.e_xy = np.column_stack((xy[:-1][same][order], xy[1:][same][order]))
        self.e_x1, self.e_y1, self.e_x2, self.e_y2 = self.e_xy.T
        self.e_grid = e_grid[order].astype(np.int32)
        counts = np.bincount(e_grid, minlength=n)
        self.e_start = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
        self.e_count = counts.astype(np.int64)

    def _grid_keys(self, edge_keys: np.ndarray) -> np.ndarray:
        """Sorted distinct ``cell * n_grids + grid`` from ``_edge_keys``."""
        n_edges = max(self.e_grid.size, 1)
        keys = edge_keys // n_edges * len(self.grid_codes) + self.e_grid[edge_keys % n_edges]
        return _sorted_distinct(keys)

    def _edge_keys(self, grids: np.ndarray) -> np.ndarray:
        """Sorted distinct ``cell * n_edges + edge`` for every cell each boundary edge of
        ``grids`` (indices) passes through."""
        nx, ny = self.nx, self.ny
        n_edges = max(self.e_grid.size, 1)
        cnt = self.e_count[grids]
        edge = (np.repeat(self.e_start[grids], cnt)
                + (np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)))
        ax = (self.e_x1[edge] - self.x0) * self.inv_cx
        ay = (self.e_y1[edge] - self.y0) * self.inv_cy
        bx = (self.e_x2[edge] - self.x0) * self.inv_cx
        by = (self.e_y2[edge] - self.y0) * self.inv_cy
        length = np.maximum(np.abs(bx - ax), np.abs(by - ay))
        pieces = np.maximum(1, np.ceil(length / 0.45)).astype(np.int64)
        seg = np.repeat(np.arange(ax.size), pieces)
        k = np.arange(seg.size) - np.repeat(np.cumsum(pieces) - pieces, pieces)
        t0 = k / pieces[seg]
        t1 = (k + 1) / pieces[seg]
        dx, dy = bx[seg] - ax[seg], by[seg] - ay[seg]
        px0, px1 = ax[seg] + dx * t0, ax[seg] + dx * t1
        py0, py1 = ay[seg] + dy * t0, ay[seg] + dy * t1
        del k, t0, t1, dx, dy
        eps = 1e-7
        lo_x = np.clip(np.floor(np.minimum(px0, px1) - eps), 0, nx - 1).astype(np.int64)
        hi_x = np.clip(np.floor(np.maximum(px0, px1) + eps), 0, nx - 1).astype(np.int64)
        lo_y = np.clip(np.floor(np.minimum(py0, py1) - eps), 0, ny - 1).astype(np.int64)
        hi_y = np.clip(np.floor(np.maximum(py0, py1) + eps), 0, ny - 1).astype(np.int64)
        del px0, px1, py0, py1
        piece_edge = edge[seg]
        del edge
        keys = np.concatenate([
            (cy * nx + cx) * n_edges + piece_edge for cx in (lo_x, hi_x) for cy in (lo_y, hi_y)
        ])
        del lo_x, hi_x, lo_y, hi_y, piece_edge, seg
        return _sorted_distinct(keys)

    def _set_boundary(self, keys: np.ndarray) -> None:
        """Boundary cells and their candidate grids (CSR) from sorted keys."""
        n = len(self.grid_codes)
        cand_cell = keys // n
        self.cand_grid = (keys % n).astype(np.int32)
        self.b_cells, b_first = np.unique(cand_cell, return_index=True)
        self.b_start = b_first.astype(np.int64)
        self.b_count = np.diff(np.append(b_first, cand_cell.size)).astype(np.int64)

    def _label_window(self, labels: np.ndarray, cx0: int, cx1: int, cy0: int, cy1: int) -> None:
        """Label the boundary-free cells of a window with one tree lookup per connected
        region (boundary cells get their slot in ``_finish_lattice``)."""
        nx = self.nx
        marked = np.zeros(self.ny * nx, dtype=bool)
        marked[self.b_cells] = True
        sub = ~marked.reshape(self.ny, nx)[cy0:cy1, cx0:cx1]
        comp, ncomp = ndimage.label(sub)
        flat = comp.ravel()
        first = np.full(ncomp + 1, -1, dtype=np.int64)
        first[flat[::-1]] = np.arange(flat.size - 1, -1, -1, dtype=np.int64)
        reps = first[1:]
        w = cx1 - cx0
        rx = self.x0 + (cx0 + (reps % w) + 0.5) / self.inv_cx
        ry = self.y0 + (cy0 + (reps // w) + 0.5) / self.inv_cy
        comp_label = np.full(ncomp + 1, NONE, dtype=np.int32)
        comp_label[1:] = self._tree_lookup(rx, ry)
        view = labels.reshape(self.ny, nx)[cy0:cy1, cx0:cx1]
        view[sub] = comp_label[comp[sub]]

    def _finish_lattice(self, labels: np.ndarray, edge_keys: np.ndarray) -> None:
        # A boundary cell holds -(2 + its slot in b_cells): no search at lookup time.
        labels[self.b_cells] = -2 - np.arange(self.b_cells.size, dtype=np.int32)
        self.labels = labels
        self.boundary_cell_share = float(self.b_cells.size / labels.size)
        col, row = self.b_cells % self.nx, self.b_cells // self.nx
        centre = (self.x0 + (col + 0.5) / self.inv_cx, self.y0 + (row + 0.5) / self.inv_cy)
        self.cells = build_cell_edges(
            edge_keys, max(self.e_grid.size, 1), self.e_grid, self.e_xy, self.grid_geoms,
            len(self.grid_codes), self.b_cells, self.b_start, self.b_count, self.cand_grid,
            centre)
        self.nbytes = int(labels.nbytes + self.cand_grid.nbytes + self.b_cells.nbytes * 3
                          + self.e_xy.nbytes + self.cells.nbytes)

    def _edge_lookup(self, x: np.ndarray, y: np.ndarray, slot: np.ndarray) -> np.ndarray:
        """Grid index of points in boundary cells by the edges through their cell
        (``geo.lookup.cells``); degenerate points by ``_full_edge_lookup``, points no candidate
        holds by the STRtree."""
        out, degenerate = cell_lookup(self.cells, self.e_xy, self.b_start, self.b_count,
                                      self.cand_grid, x, y, slot)
        redo = np.flatnonzero(degenerate)
        if redo.size:
            out[redo] = self._full_edge_lookup(x[redo], y[redo], slot[redo])
        none = np.flatnonzero((out < 0) & ~degenerate)
        if none.size:
            out[none] = self._tree_lookup(x[none], y[none])
        return out

    def _full_edge_lookup(self, x: np.ndarray, y: np.ndarray, slot: np.ndarray) -> np.ndarray:
        """Grid index of points in boundary cells: an exact even-odd test (points on an edge
        count as inside) against the grids whose boundary crosses the cell; smallest code wins.
        Points no candidate holds go to the STRtree (overlapping grids, or none: -1)."""
        cnt = self.b_count[slot]
        pt = np.repeat(np.arange(x.size), cnt)  # one row per (point, candidate grid)
        cand = self.cand_grid[np.repeat(self.b_start[slot], cnt)
                              + (np.arange(pt.size) - np.repeat(np.cumsum(cnt) - cnt, cnt))]
        ecnt = self.e_count[cand]
        pair = np.repeat(np.arange(pt.size), ecnt)  # one row per (point, grid, edge)
        edge = (np.repeat(self.e_start[cand], ecnt)
                + (np.arange(pair.size) - np.repeat(np.cumsum(ecnt) - ecnt, ecnt)))
        px, py = x[pt[pair]], y[pt[pair]]
        x1, y1, x2, y2 = self.e_x1[edge], self.e_y1[edge], self.e_x2[edge], self.e_y2[edge]
        straddle = (y1 > py) != (y2 > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            xint = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
        crossing = straddle & (px < xint)
        on_edge = (((x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)) == 0) & (
            (px >= np.minimum(x1, x2)) & (px <= np.maximum(x1, x2))
            & (py >= np.minimum(y1, y2)) & (py <= np.maximum(y1, y2)))
        odd = np.bincount(pair, weights=crossing, minlength=pt.size).astype(np.int64) % 2 == 1
        touch = np.bincount(pair, weights=on_edge, minlength=pt.size) > 0
        inside = odd | touch
        big = np.iinfo(np.int64).max
        out = np.full(x.size, big, dtype=np.int64)
        np.minimum.at(out, pt[inside], cand[inside].astype(np.int64))
        none = np.flatnonzero(out == big)
        if none.size:
            out[none] = self._tree_lookup(x[none], y[none])
        return out

    def _edge_lookup_one(self, x: float, y: float, slot: int) -> int:
        """``_edge_lookup`` for one point (the same compiled test, so the same answer); -1
        when no candidate holds it or the point is degenerate (the caller then takes the
        array path)."""
        out, degenerate = cell_lookup(self.cells, self.e_xy, self.b_start, self.b_count,
                                      self.cand_grid, np.array([x]), np.array([y]),
                                      np.array([slot], dtype=np.int64))
        return -1 if degenerate[0] else int(out[0])

    def _tree_lookup(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Grid index (smallest code wins) of each point by the STRtree, -1 where none."""
        out = np.full(x.size, np.iinfo(np.int64).max, dtype=np.int64)
        if x.size:
            pts = shapely.points(x, y)
            hit_pt, hit_grid = self.tree.query(pts, predicate="intersects")
            np.minimum.at(out, hit_pt, hit_grid)
        out[out == np.iinfo(np.int64).max] = NONE
        return out



def _sorted_distinct(keys: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an int64 array (sorted in place). Sort + mask: numpy 2's
    hashing ``np.unique`` took 30 s on 32 M keys here where sorting takes 1 s."""
    keys.sort()
    distinct = np.empty(keys.size, dtype=bool)
    distinct[:1] = True
    np.not_equal(keys[1:], keys[:-1], out=distinct[1:])
    return keys[distinct]
