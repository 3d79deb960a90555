"""Boundary cells answered by the edges crossing the cell alone (WGS 84 degrees).

A point ``p`` in a boundary cell is inside grid ``g`` exactly when the cell's reference point
``r`` (its centre) is inside ``g`` XOR the segment ``p r`` crosses ``g``'s boundary an odd number
of times. The segment lies in the (convex) cell, so only the edges passing through the cell can
cross it: a few per cell, where the full even-odd test reads every edge of every candidate grid.
Whether ``r`` is inside each candidate is computed once at build time (GEOS ``contains_xy``).

Points on an edge count as inside (the same exact test as the full path). A point whose
segment passes exactly through a vertex, or a cell whose centre lies on an edge's line, is
*degenerate*: the caller answers it with the full even-odd test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from geo.lookup.kernel import cell_test


@dataclass
class CellEdges:
    """Per boundary cell (slot): centre, the rows of the edges through it; per row: the edge
    (index into the lattice's ``e_xy``), the position of its grid in the cell's candidate list,
    and the side of the edge the centre lies on (+1, -1; 0 when on its line)."""

    rx: np.ndarray
    ry: np.ndarray
    c_start: np.ndarray
    c_count: np.ndarray
    ce_edge: np.ndarray
    ce_j: np.ndarray
    ce_side: np.ndarray
    ref_in: np.ndarray  # per (cell, candidate) pair: the centre is inside the candidate

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in (self.rx, self.ry, self.c_start, self.c_count,
                                          self.ce_edge, self.ce_j, self.ce_side, self.ref_in)))


def segments(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owner, index) rows of the CSR slices ``starts[i] : starts[i] + counts[i]``."""
    owner = np.repeat(np.arange(counts.size), counts)
    first = np.cumsum(counts) - counts
    index = np.repeat(starts, counts) + (np.arange(owner.size) - np.repeat(first, counts))
    return owner, index


def build_cell_edges(edge_keys: np.ndarray, n_edges: int, e_grid: np.ndarray,
                     e_xy: np.ndarray, grid_geoms: np.ndarray, n_grids: int,
                     b_cells: np.ndarray, b_start: np.ndarray, b_count: np.ndarray,
                     cand_grid: np.ndarray, centre: tuple[np.ndarray, np.ndarray]) -> CellEdges:
    """Tables from sorted distinct ``cell * n_edges + edge`` keys; ``b_*``/``cand_grid`` are
    the lattice's boundary cells and candidates, ``centre`` (x, y) of each boundary cell."""
    ce_cell = edge_keys // n_edges
    ce_edge = (edge_keys % n_edges).astype(np.int32)
    del edge_keys
    c_start = np.searchsorted(ce_cell, b_cells, side="left").astype(np.int64)
    c_count = (np.searchsorted(ce_cell, b_cells, side="right") - c_start).astype(np.int32)
    # position of each row's grid among its cell's candidates (both sorted by cell, then grid)
    slot, rows = segments(c_start, c_count.astype(np.int64))
    pair_key = np.repeat(b_cells, b_count) * n_grids + cand_grid
    row_key = ce_cell[rows] * n_grids + e_grid[ce_edge[rows]]
    ce_j = np.zeros(ce_edge.size, dtype=np.int32)
    ce_j[rows] = np.searchsorted(pair_key, row_key) - b_start[slot]
    del pair_key, row_key, ce_cell
    rx, ry = centre
    x1, y1, x2, y2 = e_xy[ce_edge[rows]].T
    ce_side = np.zeros(ce_edge.size, dtype=np.int8)
    ce_side[rows] = np.sign((x2 - x1) * (ry[slot] - y1) - (y2 - y1) * (rx[slot] - x1))
    del x1, y1, x2, y2, slot, rows
    pair_cell, _ = segments(np.zeros_like(b_count), b_count)
    ref_in = shapely.contains_xy(grid_geoms[cand_grid], rx[pair_cell], ry[pair_cell])
    return CellEdges(rx, ry, c_start, c_count, ce_edge, ce_j, ce_side, ref_in)


def cell_lookup(t: CellEdges, e_xy: np.ndarray, b_start: np.ndarray, b_count: np.ndarray,
                cand_grid: np.ndarray, x: np.ndarray, y: np.ndarray,
                slot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(grid, degenerate) per point in boundary cell ``slot``: the smallest candidate grid
    holding it, -1 where none does; degenerate points need the full test (compiled loop,
    ``geo.lookup.kernel.cell_test``). Large batches go in slot order: neighbouring cells'
    tables are then read together instead of one cache miss after another."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    slot = np.ascontiguousarray(slot, dtype=np.int64)
    if slot.size <= SORT_ABOVE:
        return _test(t, e_xy, b_start, b_count, cand_grid, x, y, slot)
    # sort values, not indices (about twice as fast): slot in the high bits, position low
    shift = int(slot.size).bit_length()
    key = slot << shift
    key |= np.arange(slot.size, dtype=np.int64)
    key.sort()
    order = key & ((1 << shift) - 1)
    del key
    got, bad = _test(t, e_xy, b_start, b_count, cand_grid, x[order], y[order], slot[order])
    out = np.empty_like(got)
    degenerate = np.empty_like(bad)
    out[order] = got
    degenerate[order] = bad
    return out, degenerate


SORT_ABOVE = 4096


def _test(t: CellEdges, e_xy: np.ndarray, b_start: np.ndarray, b_count: np.ndarray,
          cand_grid: np.ndarray, x: np.ndarray, y: np.ndarray,
          slot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    result: tuple[np.ndarray, np.ndarray] = cell_test(
        x, y, slot, t.rx, t.ry, t.c_start, t.c_count, t.ce_edge, t.ce_j, t.ce_side, t.ref_in,
        b_start, b_count, cand_grid, e_xy)
    return result
