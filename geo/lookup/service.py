"""Point-in-grid lookup: which district, street, community and grid hold a point.

PostGIS stays the source of truth; answers come from an in-process index built from one
generation's areas and cached per database and generation:

- A **lattice** of cells covers the grids' bounds (about ``cells_per_grid`` cells a grid, at most
  ``max_cells``). Every cell that a grid boundary passes through is marked (conservatively: each
  boundary segment is cut into pieces shorter than half a cell and the 2x2 cells around each
  piece are marked). The unmarked cells fall into 4-connected regions that no boundary crosses,
  so each region lies wholly inside one grid or outside all of them; one point per region,
  looked up in the STRtree, labels it. A point in an unmarked cell is answered by arithmetic
  (two multiplications, a floor and one array read).
- Points in marked (boundary) cells are answered by a shapely 2 **STRtree** over the grids,
  queried vectorised with ``predicate="intersects"``.

**Boundary rule**: a grid holds the points of its closed polygon (interior and boundary). A point
on a boundary shared by several grids goes to the grid with the **smallest code**. Deterministic,
and the same in the lattice and the tree (regions never touch a boundary).

A point in no grid is checked against the district polygon: inside it, it is flagged ``no_grid``
(a single lookup raises NotFound); outside it, ``outside_district`` (OutsideDistrict), unless
the point with lon and lat swapped lands inside, which is flagged ``swapped``
(SwappedCoordinates).

**Freshness**: every write to ``area``, ``generation`` or ``grid_team_member`` appends to
``lookup_change`` (migration 0002). The index for the current generation is rebuilt when that
log's ``(count, max id)`` differs from the one it was built at. ``locate_point`` checks on every
call (one tiny query); the HTTP layer checks at most every ``LookupSettings.check_interval_ms``.
``at=`` dates resolve with the SQL function ``generation_at`` (end of that day, China Standard
Time) and get their own cached index. Teams are the current ``grid_team_member`` rows (teams are
not versioned by generation).
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import orjson
import shapely
from pydantic import Field
from scipy import ndimage
from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection

from geo.core.errors import (
    InvalidInput,
    NotFound,
    OutsideDistrict,
    Problem,
    SwappedCoordinates,
)
from geo.core.settings import WanggeSettings
from geo.data.coords import normalise_crs, to_wgs84

# Status codes of a batch lookup, one per point.
OK, NO_GRID, OUTSIDE, SWAPPED, INVALID, OUT_OF_RANGE = 0, 1, 2, 3, 4, 5
STATUS_NAMES = {
    OK: "ok",
    NO_GRID: "no_grid",
    OUTSIDE: "outside_district",
    SWAPPED: "swapped",
    INVALID: "not_a_number",
    OUT_OF_RANGE: "out_of_range",
}
log = logging.getLogger(__name__)

_NONE, _BOUNDARY = -1, -2


class LookupSettings(WanggeSettings):
    """The point-lookup index and its HTTP endpoints."""

    cells_per_grid: int = Field(
        default=1600,
        description="Target lattice cells per grid (more: fewer tree queries, more RAM).",
    )
    max_cells: int = Field(default=16_000_000, description="Most lattice cells per index.")
    check_interval_ms: int = Field(
        default=500, description="HTTP: check for a new generation at most this often (ms)."
    )
    max_batch_points: int = Field(
        default=1_000_000, description="Most points one POST /v1/lookup/batch may hold (else 413)."
    )
    stream_threshold: int = Field(
        default=10_000, description="Batches with more points than this are streamed back."
    )
    cached_generations: int = Field(
        default=4, description="Dated (at=) indexes kept in memory per database."
    )
    incremental_max_grids: int = Field(
        default=500, description="A new generation changing at most this many grids (added, "
        "removed or reshaped) patches the lattice around them instead of rebuilding it."
    )


@dataclass
class LookupResult:
    """The areas holding one point. lon/lat are WGS 84 degrees; distance in metres."""

    lon: float
    lat: float
    district: dict[str, Any]
    street: dict[str, Any] | None
    community: dict[str, Any] | None
    grid: dict[str, Any]
    boundary_distance_m: float
    generation: int | None = None
    input: dict[str, Any] = field(default_factory=dict)

    @property
    def areas(self) -> list[dict[str, Any]]:
        return [a for a in (self.district, self.street, self.community, self.grid) if a]

    def as_dict(self) -> dict[str, Any]:
        return {
            "point": {"lon": self.lon, "lat": self.lat, "crs": "wgs84"},
            "input": self.input,
            "generation": self.generation,
            "boundary_distance_m": self.boundary_distance_m,
            "areas": self.areas,
            "district": self.district,
            "street": self.street,
            "community": self.community,
            "grid": self.grid,
        }


class LookupIndex:
    """Lattice + STRtree over one generation's grids (see the module docstring)."""

    def __init__(self, rows: list[Any], team: dict[str, list[dict[str, Any]]], *,
                 generation: int | None, version: Any, settings: LookupSettings,
                 previous: LookupIndex | None = None) -> None:
        """Index ``rows`` (area rows of one generation). With ``previous`` (the index this one
        replaces) and few changed grids, only the lattice cells around them are recomputed."""
        t0 = time.perf_counter()
        self.generation = generation
        self.version = version
        self.settings = settings
        by_level: dict[str, list[Any]] = {"district": [], "street": [], "community": [], "grid": []}
        for r in rows:
            by_level[r.level].append(r)
        if not by_level["grid"] or not by_level["district"]:
            raise NotFound(
                "no district or grids in this generation",
                [Problem(reason="no grids to look up in", field="generation")],
            )
        grids = sorted(by_level["grid"], key=lambda r: r.code)
        self.grid_codes = [r.code for r in grids]
        self.grid_wkb = [bytes(r.wkb) for r in grids]
        self.grid_geoms = shapely.from_wkb(self.grid_wkb)
        self.grid_info = [
            {"type": "grid", "code": r.code, "name": r.name,
             "responsible_body": r.responsible_body, "parent_code": r.parent_code,
             "team": team.get(r.code, [])}
            for r in grids
        ]
        self.areas: dict[str, dict[str, Any]] = {}
        for level in ("district", "street", "community"):
            for r in by_level[level]:
                info = {"type": level, "code": r.code, "name": r.name}
                if r.parent_code:
                    info["parent_code"] = r.parent_code
                self.areas[r.code] = info
        self.district = self.areas[by_level["district"][0].code]
        self.district_wkb = [bytes(r.wkb) for r in by_level["district"]]
        district_geoms = shapely.from_wkb(self.district_wkb)
        self.district_geom = shapely.union_all(district_geoms)
        shapely.prepare(self.district_geom)
        self.metric_srid = by_level["district"][0].metric_srid
        comm = by_level["community"]
        self.comm_codes = [r.code for r in sorted(comm, key=lambda r: r.code)]
        self.comm_tree = shapely.STRtree(
            shapely.from_wkb([bytes(r.wkb) for r in sorted(comm, key=lambda r: r.code)])
        ) if comm else None
        shapely.prepare(self.grid_geoms)
        self.tree = shapely.STRtree(self.grid_geoms)
        plan = self._incremental_plan(previous, settings)
        self.incremental = plan is not None
        if plan is None:
            self._build_lattice(settings)
        else:
            self._update_lattice(previous, *plan)
        self._fragments: dict[int, bytes] = {}
        self.build_s = time.perf_counter() - t0

    # -- lattice -------------------------------------------------------------------------
    def _build_lattice(self, settings: LookupSettings) -> None:
        n = len(self.grid_codes)
        minx, miny, maxx, maxy = shapely.total_bounds(self.grid_geoms)
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
        self._set_boundary(self._boundary_keys(np.arange(n)))
        labels = np.empty(ny * nx, dtype=np.int32)
        self._label_window(labels, 0, nx, 0, ny)
        self._finish_lattice(labels)

    def _incremental_plan(self, prev: LookupIndex | None, settings: LookupSettings
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
        window = tuple(float(v) for v in shapely.total_bounds(geoms))
        inner = shapely.box(prev.x0 + 1 / prev.inv_cx, prev.y0 + 1 / prev.inv_cy,
                            prev.x0 + (prev.nx - 1) / prev.inv_cx,
                            prev.y0 + (prev.ny - 1) / prev.inv_cy)
        if not shapely.contains(inner, shapely.box(*window)):
            return None
        return window, remap

    def _update_lattice(self, prev: LookupIndex, window: tuple[float, float, float, float],
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
        fresh = self._boundary_keys(near)
        cells = fresh // n
        col, row = cells % nx, cells // nx
        fresh = fresh[(col >= cx0) & (col < cx1) & (row >= cy0) & (row < cy1)]
        keys = np.concatenate((kept, fresh))
        keys.sort()
        self._set_boundary(keys)
        self._label_window(labels, cx0, cx1, cy0, cy1)
        self._finish_lattice(labels)

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
        counts = np.bincount(e_grid, minlength=n)
        self.e_start = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
        self.e_count = counts.astype(np.int64)

    def _boundary_keys(self, grids: np.ndarray) -> np.ndarray:
        """Sorted distinct ``cell * n_grids + grid`` for every cell the boundary of each of
        ``grids`` (indices) passes through."""
        n, nx, ny = len(self.grid_codes), self.nx, self.ny
        cnt = self.e_count[grids]
        edge = (np.repeat(self.e_start[grids], cnt)
                + (np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)))
        seg_grid = np.repeat(grids, cnt)
        ax = (self.e_x1[edge] - self.x0) * self.inv_cx
        ay = (self.e_y1[edge] - self.y0) * self.inv_cy
        bx = (self.e_x2[edge] - self.x0) * self.inv_cx
        by = (self.e_y2[edge] - self.y0) * self.inv_cy
        del edge
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
        piece_grid = seg_grid[seg].astype(np.int64)
        keys = np.concatenate([
            (cy * nx + cx) * n + piece_grid for cx in (lo_x, hi_x) for cy in (lo_y, hi_y)
        ])
        del lo_x, hi_x, lo_y, hi_y, piece_grid, seg
        # sort + mask, since numpy 2's hashing np.unique took 30 s on 32 M keys here where
        # sorting takes 1 s
        keys.sort()
        distinct = np.empty(keys.size, dtype=bool)
        distinct[:1] = True
        np.not_equal(keys[1:], keys[:-1], out=distinct[1:])
        return keys[distinct]

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
        comp_label = np.full(ncomp + 1, _NONE, dtype=np.int32)
        comp_label[1:] = self._tree_lookup(rx, ry)
        view = labels.reshape(self.ny, nx)[cy0:cy1, cx0:cx1]
        view[sub] = comp_label[comp[sub]]

    def _finish_lattice(self, labels: np.ndarray) -> None:
        # A boundary cell holds -(2 + its slot in b_cells): no search at lookup time.
        labels[self.b_cells] = -2 - np.arange(self.b_cells.size, dtype=np.int32)
        self.labels = labels
        self.boundary_cell_share = float(self.b_cells.size / labels.size)
        self.nbytes = int(labels.nbytes + self.cand_grid.nbytes + self.b_cells.nbytes * 3
                          + self.e_xy.nbytes)

    def _edge_lookup(self, x: np.ndarray, y: np.ndarray, slot: np.ndarray) -> np.ndarray:
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
        """``_edge_lookup`` for one point in plain floats (the same operations, so the same
        answer); -1 when no candidate holds it (the caller then takes the array path)."""
        s = int(self.b_start[slot])
        for g in sorted(self.cand_grid[s:s + int(self.b_count[slot])].tolist()):
            es = int(self.e_start[g])
            odd = False
            for x1, y1, x2, y2 in self.e_xy[es:es + int(self.e_count[g])].tolist():
                if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
                    odd = not odd
                if (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1) == 0 \
                        and min(x1, x2) <= x <= max(x1, x2) and min(y1, y2) <= y <= max(y1, y2):
                    return g  # on an edge counts as inside
            if odd:
                return g
        return -1

    def _tree_lookup(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Grid index (smallest code wins) of each point by the STRtree, -1 where none."""
        out = np.full(x.size, np.iinfo(np.int64).max, dtype=np.int64)
        if x.size:
            pts = shapely.points(x, y)
            hit_pt, hit_grid = self.tree.query(pts, predicate="intersects")
            np.minimum.at(out, hit_pt, hit_grid)
        out[out == np.iinfo(np.int64).max] = _NONE
        return out

    # -- lookups -------------------------------------------------------------------------
    def grid_index(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Grid index per WGS 84 point (order of ``grid_codes``), -1 where no grid holds it."""
        with np.errstate(over="ignore"):
            fx = lon - self.x0
            fx *= self.inv_cx
            fy = lat - self.y0
            fy *= self.inv_cy
        with np.errstate(invalid="ignore"):
            ix = fx.astype(np.int32)  # NaN, inf and huge values become INT_MIN: outside
            iy = fy.astype(np.int32)
        outside = ix.view(np.uint32) >= self.nx
        outside |= iy.view(np.uint32) >= self.ny
        iy *= self.nx
        iy += ix
        np.putmask(iy, outside, 0)
        out = self.labels[iy]
        np.putmask(out, outside, _NONE)
        slow = np.flatnonzero(out <= _BOUNDARY)
        if slow.size:
            out[slow] = self._edge_lookup(lon[slow], lat[slow], -2 - out[slow])
        return out

    def classify(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(grid index, status) per WGS 84 point; status codes OK, NO_GRID, OUTSIDE, SWAPPED,
        INVALID (not a number), OUT_OF_RANGE."""
        lon = np.asarray(lon, dtype=np.float64)
        lat = np.asarray(lat, dtype=np.float64)
        gi = self.grid_index(lon, lat)
        status = np.zeros(lon.size, dtype=np.int8)
        miss = np.flatnonzero(gi < 0)
        if miss.size:
            status[miss] = self._classify_missing(lon[miss], lat[miss])
        return gi, status

    def _classify_missing(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        st = np.full(lon.size, OUTSIDE, dtype=np.int8)
        finite = np.isfinite(lon) & np.isfinite(lat)
        st[~finite] = INVALID
        in_range = finite & (np.abs(lon) <= 180) & (np.abs(lat) <= 90)
        ok = np.flatnonzero(in_range)
        st[ok[shapely.contains_xy(self.district_geom, lon[ok], lat[ok])]] = NO_GRID
        cand = np.flatnonzero(finite & (st != NO_GRID))
        if cand.size:
            sw = shapely.contains_xy(self.district_geom, lat[cand], lon[cand])
            st[cand[sw]] = SWAPPED
        bad_range = finite & ~in_range & (st != SWAPPED)
        st[bad_range] = OUT_OF_RANGE
        return st

    def community_of(self, lon: float, lat: float) -> dict[str, Any] | None:
        if self.comm_tree is None:
            return None
        hits = self.comm_tree.query(shapely.points(lon, lat), predicate="intersects")
        if len(hits) == 0:
            return None
        return self.areas.get(self.comm_codes[int(np.min(hits))])

    def hierarchy(self, gi: int) -> tuple[dict | None, dict | None, dict]:
        """(street, community, grid) dicts of grid index ``gi`` (by the code hierarchy)."""
        grid = self.grid_info[gi]
        community = self.areas.get(grid["parent_code"])
        street = self.areas.get(grid["parent_code"][:9]) if grid["parent_code"] else None
        return street, community, grid

    def boundary_distance_m(self, gi: int, lon: float, lat: float) -> float:
        """Metres from the point to grid ``gi``'s boundary (nearest edge, in a local
        equirectangular frame at the point: within ~0.5 % of the geodesic over a few km)."""
        s, e = int(self.e_start[gi]), int(self.e_start[gi] + self.e_count[gi])
        kx = 111_320.0 * math.cos(math.radians(lat))
        ky = 110_574.0
        if e - s <= 64:  # plain floats: numpy's per-call overhead dominates a few edges
            best = math.inf
            for x1, y1, x2, y2 in self.e_xy[s:e].tolist():
                ax, ay = (x1 - lon) * kx, (y1 - lat) * ky
                dx, dy = (x2 - lon) * kx - ax, (y2 - lat) * ky - ay
                den = dx * dx + dy * dy
                t = -(ax * dx + ay * dy) / den if den > 0 else 0.0
                t = 0.0 if t < 0.0 else 1.0 if t > 1.0 else t
                ex, ey = ax + t * dx, ay + t * dy
                d2 = ex * ex + ey * ey
                if d2 < best:
                    best = d2
            return math.sqrt(best)
        ax = (self.e_x1[s:e] - lon) * kx
        ay = (self.e_y1[s:e] - lat) * ky
        bx = (self.e_x2[s:e] - lon) * kx
        by = (self.e_y2[s:e] - lat) * ky
        dx, dy = bx - ax, by - ay
        den = dx * dx + dy * dy
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.clip(np.where(den > 0, -(ax * dx + ay * dy) / den, 0.0), 0.0, 1.0)
        return float(np.sqrt(np.min((ax + t * dx) ** 2 + (ay + t * dy) ** 2)))

    def locate_one(self, lon: float, lat: float) -> tuple[int, int]:
        """(grid index, status) of one WGS 84 point: pure-Python arithmetic for interior cells
        (the same float operations as ``grid_index``), the array path otherwise."""
        fx = (lon - self.x0) * self.inv_cx
        fy = (lat - self.y0) * self.inv_cy
        if 0.0 <= fx < self.nx and 0.0 <= fy < self.ny:
            lab = int(self.labels[int(fy) * self.nx + int(fx)])
            if lab >= 0:
                return lab, OK
            if lab <= _BOUNDARY:
                gi = self._edge_lookup_one(lon, lat, -2 - lab)
                if gi >= 0:
                    return gi, OK
        gi, st = self.classify(np.array([lon], dtype=np.float64),
                               np.array([lat], dtype=np.float64))
        return int(gi[0]), int(st[0])

    def fragment(self, gi: int) -> bytes:
        """Pre-serialised JSON tail for grid ``gi``: generation, areas, district..grid, '}'."""
        frag = self._fragments.get(gi)
        if frag is None:
            street, community, grid = self.hierarchy(gi)
            body = orjson.dumps({
                "generation": self.generation,
                "areas": [a for a in (self.district, street, community, grid) if a],
                "district": self.district, "street": street, "community": community,
                "grid": grid,
            })
            frag = body[1:]  # drop the leading '{'
            self._fragments[gi] = frag
        return frag


# -- loading and caching ---------------------------------------------------------------------

_AREA_SQL = (
    "SELECT level, code, parent_code, name, responsible_body, metric_srid, "
    "ST_AsBinary(geom) AS wkb FROM area "
)


def _version(conn: Connection) -> tuple[int, int]:
    row = conn.execute(text("SELECT count(*), coalesce(max(id), 0) FROM lookup_change")).one()
    return int(row[0]), int(row[1])


def _team(conn: Connection) -> dict[str, list[dict[str, Any]]]:
    """Each grid's team (role, name, phone), aggregated in SQL: one row per grid."""
    rows = conn.execute(text(
        "SELECT grid_code, json_agg(json_build_object('role', role, 'name', name, "
        "'phone', phone) ORDER BY role, id)::text FROM grid_team_member GROUP BY grid_code"
    )).all()
    return {code: orjson.loads(members) for code, members in rows}


def build_index(conn: Connection, *, generation: int | None = None,
                settings: LookupSettings | None = None,
                previous: LookupIndex | None = None) -> LookupIndex:
    """Build the index of the current generation (``generation=None``) or of ``generation``;
    ``previous`` (the index it replaces) lets a small change patch its lattice."""
    settings = settings or LookupSettings()
    version = _version(conn)
    if generation is None:
        rows = conn.execute(text(_AREA_SQL + "WHERE generation_high IS NULL")).all()
        gen = conn.execute(text(
            "SELECT max(generation_low) FROM area WHERE generation_high IS NULL")).scalar()
    else:
        rows = conn.execute(text(
            _AREA_SQL + "WHERE generation_low <= :g "
            "AND (generation_high IS NULL OR generation_high >= :g)"), {"g": generation}).all()
        gen = generation
    return LookupIndex(rows, _team(conn), generation=gen, version=version, settings=settings,
                       previous=previous)


class _DbCache:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.current: LookupIndex | None = None
        self.checked_at = 0.0
        self.dated: OrderedDict[int, LookupIndex] = OrderedDict()
        self.dates: dict[str, int] = {}
        self.dates_version: Any = None
        self.building = False
        self.forced = False
        self.invalidations = 0


_CACHES: dict[str, _DbCache] = {}
_CACHES_LOCK = threading.Lock()


def invalidate_index(*, keep_previous: bool = True) -> None:
    """Make the next lookup rebuild. With ``keep_previous`` the current index stays the base
    of that rebuild (a small change patches it) and answers until then; else it is dropped."""
    with _CACHES_LOCK:
        if not keep_previous:
            _CACHES.clear()
            return
        for cache in _CACHES.values():
            with cache.lock:
                cache.forced = True
                cache.invalidations += 1
                cache.checked_at = float("-inf")
                cache.dates.clear()
                cache.dated.clear()


_ENGINE_KEYS: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()


def _cache_for(bind: Connection | Engine) -> _DbCache:
    eng = bind.engine
    key = _ENGINE_KEYS.get(eng)
    if key is None:  # rendering the URL costs ~10 us: once per engine
        key = _ENGINE_KEYS[eng] = eng.url.render_as_string(hide_password=True)
    cache = _CACHES.get(key)
    if cache is None:
        with _CACHES_LOCK:
            cache = _CACHES.setdefault(key, _DbCache())
    return cache


def _with_conn(bind: Connection | Engine, fn):  # noqa: ANN001, ANN202
    if isinstance(bind, Connection):
        return fn(bind)
    with bind.connect() as conn:
        return fn(conn)


def _refresh_in_background(engine: Engine, cache: _DbCache,
                           settings: LookupSettings | None) -> None:
    """Check the version, and rebuild if it changed (or the index was invalidated), in a
    thread; the current index keeps answering. Call with ``cache.lock`` held."""
    def run() -> None:
        try:
            with cache.lock:
                seen = cache.invalidations
                base, forced = cache.current, cache.forced
            with engine.connect() as conn:
                version = _version(conn)
                fresh = base is not None and not forced and base.version == version
                index = base if fresh else build_index(conn, settings=settings, previous=base)
            with cache.lock:
                if cache.current is base:  # else a synchronous refresh installed a newer one
                    cache.current = index
                if cache.invalidations == seen:  # else invalidated meanwhile: check again
                    cache.forced = False
                    cache.checked_at = time.monotonic()
        except Exception as exc:  # noqa: BLE001 - the old index answers meanwhile
            log.warning("lookup index refresh failed: %s", str(exc).splitlines()[0][:200])
            with cache.lock:  # retried after the next interval, not on the next request
                cache.checked_at = time.monotonic()
        finally:
            cache.building = False

    cache.building = True
    threading.Thread(target=run, name="lookup-index-refresh", daemon=True).start()


def get_index(bind: Connection | Engine, *, at: date | str | None = None,
              max_staleness_ms: float = 0.0, background: bool = False,
              settings: LookupSettings | None = None) -> LookupIndex:
    """The cached index of the current generation, or of the one valid on date ``at``.

    The version is re-read when the last check is older than ``max_staleness_ms`` (0: always);
    a changed version rebuilds. ``bind`` is a Connection (used as is) or an Engine (a connection
    is opened only when the database must be read). With ``background`` (and an Engine), the
    version check and any rebuild run in a thread while the previous index keeps answering
    (the HTTP service does this: its event loop never waits on the database, and a new
    generation never stalls it).
    """
    cache = _cache_for(bind)  # settings stay None unless a build needs them (they cost ~2 ms)
    now = time.monotonic()
    idx = cache.current
    if at is None and idx is not None and (now - cache.checked_at) * 1000 < max_staleness_ms:
        return idx
    if at is None and idx is not None and background and isinstance(bind, Engine):
        # even the version check runs in a thread: the caller (an HTTP worker's event loop)
        # never waits on the database
        with cache.lock:
            if not cache.building:
                _refresh_in_background(bind, cache, settings)
        return idx

    def refresh(conn: Connection) -> LookupIndex:
        with cache.lock:
            version = _version(conn)
            if at is None:
                stale = cache.current is None or cache.forced \
                    or cache.current.version != version
                if stale:
                    cache.current = build_index(conn, settings=settings,
                                                previous=cache.current)
                    cache.forced = False
                cache.checked_at = time.monotonic()
                return cache.current
            day = parse_date(at)
            if cache.dates_version != version:
                cache.dates.clear()
                cache.dated.clear()
                cache.dates_version = version
            gen = cache.dates.get(day)
            if gen is None:
                gen = conn.execute(text(
                    "SELECT generation_at(((CAST(:d AS date) + 1)::timestamp "
                    "AT TIME ZONE 'Asia/Shanghai') - interval '1 microsecond')"), {"d": day}
                ).scalar()
                if gen is None:
                    raise NotFound(f"no boundary generation was in force on {day}",
                                   [Problem(reason=f"no generation valid on {day}", field="at")])
                cache.dates[day] = int(gen)
            index = cache.dated.get(gen)
            if index is None:
                index = build_index(conn, generation=gen, settings=settings)
                cache.dated[gen] = index
                while len(cache.dated) > index.settings.cached_generations:
                    cache.dated.popitem(last=False)
            cache.dated.move_to_end(gen)
            return index

    return _with_conn(bind, refresh)


def parse_date(at: date | str) -> str:
    """``at`` as YYYY-MM-DD, else InvalidInput naming the field ``at``."""
    if isinstance(at, date):
        return at.isoformat()
    try:
        return date.fromisoformat(str(at).strip()).isoformat()
    except ValueError as exc:
        raise InvalidInput(f"bad date {at!r}",
                           [Problem(reason="not a date in YYYY-MM-DD form", field="at")]) from exc


# -- the public functions --------------------------------------------------------------------

def parse_coordinate(value: Any, name: str) -> float:
    """A finite float from ``value``, else InvalidInput naming field ``name``."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{name} is not a number",
                           [Problem(reason="not a number", field=name)]) from None
    if not math.isfinite(out):
        raise InvalidInput(f"{name} is not a number",
                           [Problem(reason="not a finite number", field=name)])
    return out


def resolve_point(index: LookupIndex, lon: float, lat: float, crs: str,
                  input_echo: dict[str, Any] | None = None) -> LookupResult:
    """Look one WGS 84-converted point up in ``index``; raise the domain error when it fails."""
    g, st = index.locate_one(lon, lat)
    if st == OK:
        street, community, grid = index.hierarchy(g)
        return LookupResult(
            lon=lon, lat=lat, district=index.district, street=street, community=community,
            grid=grid, boundary_distance_m=index.boundary_distance_m(g, lon, lat),
            generation=index.generation, input=input_echo or {},
        )
    raise _status_error(st, index, lon, lat, crs)


def _status_error(st: int, index: LookupIndex, lon: float, lat: float, crs: str) -> Exception:
    if st == SWAPPED:
        return SwappedCoordinates(
            "latitude and longitude look swapped",
            [Problem(reason="lat and lon look swapped: swapped, the point lies in the district",
                     field="lon,lat")])
    if st == OUT_OF_RANGE:
        field_name = "lon" if abs(lon) > 180 else "lat"
        return InvalidInput(f"{field_name} out of range",
                            [Problem(reason="out of range (lon -180..180, lat -90..90)",
                                     field=field_name)])
    if st == INVALID:
        return InvalidInput("not a number", [Problem(reason="not a number", field="lon,lat")])
    if st == NO_GRID:
        community = index.community_of(lon, lat)
        return NotFound(
            "the point is inside the district but in no grid",
            [Problem(reason="in no grid", field="lon,lat",
                     detail={"district": index.district["code"],
                             "community": community["code"] if community else None})])
    return OutsideDistrict(
        f"the point ({lon:.6f}, {lat:.6f}) is outside district {index.district['code']}",
        [Problem(reason=f"outside district {index.district['code']}", field="lon,lat")])


def to_wgs84_checked(lon: float, lat: float, crs: str) -> tuple[float, float, str]:
    """Convert one point to WGS 84; range-check it in its own system first (swaps pass)."""
    name = normalise_crs(crs)
    if name in ("wgs84", "cgcs2000"):
        return lon, lat, name
    if abs(lon) > 180 or abs(lat) > 90:
        return lon, lat, name  # the swap/range check happens on the raw values
    x, y = to_wgs84(lon, lat, name)
    return float(x), float(y), name


def locate_point(conn: Connection | Engine, lon: float, lat: float, *, crs: str = "wgs84",
                 at: date | str | None = None, max_staleness_ms: float = 0.0,
                 settings: LookupSettings | None = None) -> LookupResult:
    """The district, street, community and grid holding (lon, lat) in ``crs``.

    Raises OutsideDistrict, SwappedCoordinates, InvalidInput, UnknownCRS, or NotFound (in no
    grid / no generation on ``at``). The index is re-validated against the database when its
    last check is older than ``max_staleness_ms`` (0: on each call).
    """
    lon = parse_coordinate(lon, "lon")
    lat = parse_coordinate(lat, "lat")
    wlon, wlat, name = to_wgs84_checked(lon, lat, crs)
    index = get_index(conn, at=at, max_staleness_ms=max_staleness_ms, settings=settings)
    if name not in ("wgs84", "cgcs2000") and (abs(lon) > 180 or abs(lat) > 90):
        sx, sy, _ = to_wgs84_checked(lat, lon, name)
        if shapely.contains_xy(index.district_geom, sx, sy):
            raise _status_error(SWAPPED, index, lon, lat, name)
    return resolve_point(index, wlon, wlat, name, {"lon": lon, "lat": lat, "crs": name})


def locate_batch(conn: Connection | Engine, lon: Any, lat: Any, *, crs: str = "wgs84",
                 at: date | str | None = None, max_staleness_ms: float = 0.0,
                 settings: LookupSettings | None = None) -> dict[str, Any]:
    """Look many points up at once; everything in input order.

    Returns ``{"index": LookupIndex, "lon", "lat" (WGS 84 arrays), "grid_index" (int64, -1
    where none), "status" (int8 codes, STATUS_NAMES), "grid_code" (object array, None where
    none)}``. Bad points are flagged, never raised.
    """
    x = np.asarray(lon, dtype=np.float64).ravel()
    y = np.asarray(lat, dtype=np.float64).ravel()
    name = normalise_crs(crs)
    index = get_index(conn, at=at, max_staleness_ms=max_staleness_ms, settings=settings)
    if name not in ("wgs84", "cgcs2000"):
        ok = np.isfinite(x) & np.isfinite(y) & (np.abs(x) <= 180) & (np.abs(y) <= 90)
        wx, wy = x.copy(), y.copy()
        if ok.any():
            wx[ok], wy[ok] = to_wgs84(x[ok], y[ok], name)
    else:
        wx, wy = x, y
    gi, status = index.classify(wx, wy)
    codes = np.asarray(index.grid_codes, dtype=object)
    grid_code = np.where(gi >= 0, codes[np.maximum(gi, 0)], None)
    return {"index": index, "lon": wx, "lat": wy, "grid_index": gi, "status": status,
            "grid_code": grid_code}
