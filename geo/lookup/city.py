"""One lookup index over several districts: a lattice per district, and one over the districts.

Each district gets its own ``LookupIndex`` (a lattice sized by *its* grids, so memory grows with
the grids, never with the bounding box of a province). A coarse **district lattice** (the same
``Lattice`` machinery, with the district polygons as its cells' owners) sends each point to its
district by arithmetic; then one gather in the concatenated district lattices gives the grid.
Grid indices are global: the districts' grids in code order, so index order is code order.
Coordinates are WGS 84 degrees.

**Rules between districts** (documented in docs and tested):

* a district holds the points of its closed polygon; a point on a boundary shared by two
  districts goes to the grid with the smallest code among the grids holding it (the one-district
  rule, which picks the smaller district code, since grid codes start with it);
* a point in no district's grid but inside a district is ``no_grid``; a point in no district (a
  gap between districts, or beyond the city) is ``outside_district``; ``swapped`` as before, the
  swapped point tested against every district.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import shapely

from geo.core.codes import district_of
from geo.lookup.cells import CellEdges, cell_lookup
from geo.lookup.index import OK, LookupIndex
from geo.lookup.kernel import city_labels, lattice_labels, parts_labels
from geo.lookup.lattice import BOUNDARY, NONE, Lattice
from geo.lookup.settings import LookupSettings

DISTRICT_CELLS_PER_GRID = 16  # district-lattice cells per grid: ~5 % of points in its border cells


class DistrictLattice(Lattice):
    """The lattice over the district polygons ("grids" of ``Lattice`` are districts here)."""

    def __init__(self, codes: list[str], geoms: np.ndarray, grids: int,
                 settings: LookupSettings) -> None:
        self.grid_codes = codes
        self.grid_geoms = geoms
        shapely.prepare(geoms)
        self.tree = shapely.STRtree(geoms)
        per = max(4, DISTRICT_CELLS_PER_GRID * grids // max(len(codes), 1))
        self.settings = settings.model_copy(update={"cells_per_grid": per})
        self._build_lattice(self.settings)


class CityIndex(LookupIndex):
    """Lookup index over several districts; the interface of ``LookupIndex``."""

    def __init__(self, rows: Sequence[Any], team: dict[str, list[dict[str, Any]]], *,
                 generation: int | None, version: Any, settings: LookupSettings,
                 previous: LookupIndex | None = None) -> None:
        t0 = time.perf_counter()
        self.generation = generation
        self.version = version
        self.settings = settings
        by_district: dict[str, list[Any]] = {}
        upper: list[Any] = []
        for r in rows:
            if r.level in ("province", "city"):
                upper.append(r)
            else:
                by_district.setdefault(district_of(r.code) or "", []).append(r)
        before = {p.district["code"]: p for p in getattr(previous, "parts", ())}
        if previous is not None and not isinstance(previous, CityIndex):
            before = {previous.district["code"]: previous}
        self.parts: list[LookupIndex] = []
        # the total rounded up to a power of two: a small change elsewhere leaves a district's
        # budget (and so its lattice, patched or reused) unchanged
        total = 1 << max(sum(1 for r in rows if r.level == "grid") - 1, 0).bit_length()
        for code in sorted(by_district):
            part_rows = by_district[code]
            grids = sum(1 for r in part_rows if r.level == "grid")
            if grids and any(r.level == "district" for r in part_rows):
                # the districts share the cell budget: ``max_cells`` bounds the whole index
                share = min(settings.max_cells, max(4096, settings.max_cells * grids // total))
                part_settings = settings.model_copy(update={"max_cells": share})
                self.parts.append(LookupIndex(part_rows, team, generation=generation,
                                              version=version, settings=part_settings,
                                              previous=before.get(code)))
        self.areas = {r.code: {"type": r.level, "code": r.code, "name": r.name,
                               **({"parent_code": r.parent_code} if r.parent_code else {})}
                      for r in upper}
        for p in self.parts:
            self.areas.update(p.areas)
        self.grid_codes = [c for p in self.parts for c in p.grid_codes]
        self.grid_info = [g for p in self.parts for g in p.grid_info]
        self.grid_wkb = [w for p in self.parts for w in p.grid_wkb]
        self.grid_geoms = np.concatenate([p.grid_geoms for p in self.parts])
        self.g_off = np.cumsum([0] + [len(p.grid_codes) for p in self.parts]).astype(np.int64)
        d_codes = [p.district["code"] for p in self.parts]
        d_geoms = np.array([p.district_geom for p in self.parts], dtype=object)
        cities = [a for a in self.areas.values() if a["type"] == "city"]
        self.district = cities[0] if len(cities) == 1 else self.parts[0].district
        self.district_wkb = [w for p in self.parts for w in p.district_wkb]
        self.district_geom = shapely.union_all(d_geoms)
        shapely.prepare(self.district_geom)
        self.metric_srid = self.parts[0].metric_srid
        self.tree = shapely.STRtree(self.grid_geoms)  # all grids: the exact fallback
        self.dl = DistrictLattice(d_codes, d_geoms, len(self.grid_codes), settings)
        self._stack_parts()
        self.incremental = any(p.incremental for p in self.parts)
        self._fragments: dict[int, bytes] = {}
        self.batch_templates: np.ndarray | None = None
        self.build_s = time.perf_counter() - t0

    def _stack_parts(self) -> None:
        """The districts' lattice labels in one array holding *global* grid indices (boundary
        cells keep their part's slot, -2 - slot), and per-district lattice parameters, for
        gathers by district index."""
        sizes = [p.labels.size for p in self.parts]
        wide = sum(sizes) >= 2**31
        self.l_off = np.cumsum([0] + sizes[:-1]).astype(np.int64 if wide else np.int32)
        self.labels_all = np.concatenate([p.labels for p in self.parts])
        s_off = np.cumsum([0] + [p.b_cells.size for p in self.parts]).astype(np.int64)
        self.s_off = s_off
        for off, n, g, s in zip(self.l_off, sizes, self.g_off, s_off,
                                strict=False):
            view = self.labels_all[off:off + n]
            view[view >= 0] += np.int32(g)
            view[view <= BOUNDARY] -= np.int32(s)  # -2 - (global slot)
        self._stack_boundaries()
        self.p_x0 = np.array([p.x0 for p in self.parts])
        self.p_y0 = np.array([p.y0 for p in self.parts])
        self.p_icx = np.array([p.inv_cx for p in self.parts])
        self.p_icy = np.array([p.inv_cy for p in self.parts])
        self.p_nx = np.array([p.nx for p in self.parts], dtype=np.int32)
        self.p_ny = np.array([p.ny for p in self.parts], dtype=np.int32)
        self._kernel_parts = (self.p_x0, self.p_y0, self.p_icx, self.p_icy, self.p_nx,
                              self.p_ny, self.l_off, self.labels_all)
        cells = sum(sizes)
        self.boundary_cell_share = float(
            sum(p.boundary_cell_share * p.labels.size for p in self.parts) / max(cells, 1))
        self.nbytes = int(sum(p.nbytes for p in self.parts) + self.dl.nbytes
                          + self.labels_all.nbytes + self.cells.nbytes + self.e_xy.nbytes
                          + self.cand_grid.nbytes + self.b_start.nbytes * 2)

    def _stack_boundaries(self) -> None:
        """The parts' boundary-cell tables in one set (global slots, candidates, edges), so
        the points in boundary cells of every district are answered in one pass."""
        parts = self.parts

        def off(sizes: list[int]) -> np.ndarray:
            return np.cumsum([0] + sizes[:-1]).astype(np.int64)

        pair_off = off([p.cand_grid.size for p in parts])
        row_off = off([p.cells.ce_edge.size for p in parts])
        e_off = off([p.e_xy.shape[0] for p in parts])
        cat = np.concatenate
        self.e_xy = cat([p.e_xy for p in parts])
        self.b_start = cat([p.b_start + o for p, o in zip(parts, pair_off, strict=True)])
        self.b_count = cat([p.b_count for p in parts])
        self.cand_grid = cat([p.cand_grid + np.int32(g)
                              for p, g in zip(parts, self.g_off, strict=False)])
        self.cells = CellEdges(
            rx=cat([p.cells.rx for p in parts]), ry=cat([p.cells.ry for p in parts]),
            c_start=cat([p.cells.c_start + o for p, o in zip(parts, row_off, strict=True)]),
            c_count=cat([p.cells.c_count for p in parts]),
            ce_edge=cat([p.cells.ce_edge + np.int32(o)
                         for p, o in zip(parts, e_off, strict=True)]),
            ce_j=cat([p.cells.ce_j for p in parts]),
            ce_side=cat([p.cells.ce_side for p in parts]),
            ref_in=cat([p.cells.ref_in for p in parts]))

    # -- lookups -------------------------------------------------------------------------
    def _district_labels(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        dl = self.dl
        lab: np.ndarray = lattice_labels(lon, lat, dl.x0, dl.y0, dl.inv_cx, dl.inv_cy, dl.nx,
                                         dl.ny, dl.labels)
        return lab

    def _in_districts(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """True where the point lies in a district's interior: the district lattice answers
        for its inner and outer cells, the polygons only for its border cells."""
        d = self._district_labels(lon, lat)
        inside = d >= 0
        border = np.flatnonzero(d <= BOUNDARY)
        if border.size:
            inside[border] = shapely.contains_xy(self.district_geom, lon[border], lat[border])
        return inside

    def grid_index(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Global grid index per WGS 84 point (code order), -1 where no grid holds it: the
        district lattice, then the district's lattice, in one compiled pass
        (``geo.lookup.kernel``); boundary and district-border cells by exact tests."""
        lon = np.ascontiguousarray(lon, dtype=np.float64)
        lat = np.ascontiguousarray(lat, dtype=np.float64)
        dl = self.dl
        d, out = city_labels(lon, lat, dl.x0, dl.y0, dl.inv_cx, dl.inv_cy, dl.nx, dl.ny,
                             dl.labels, *self._kernel_parts)
        slow = np.flatnonzero(out <= BOUNDARY)
        if slow.size:
            out[slow] = self._boundary_cells(-2 - out[slow], lon[slow], lat[slow])
        border = np.flatnonzero(d <= BOUNDARY)
        if border.size:
            out[border] = self._on_district_border(-2 - d[border], lon[border], lat[border])
        return out

    def _boundary_cells(self, slot: np.ndarray, lon: np.ndarray, lat: np.ndarray,
                        tree: bool = True) -> np.ndarray:
        """Global grid index of points in boundary cells (global ``slot``) of the districts'
        lattices: one edge test for all (``geo.lookup.cells``); degenerate points by their
        district's full test, points no candidate holds by the STRtree of all grids."""
        out, degenerate = cell_lookup(self.cells, self.e_xy, self.b_start, self.b_count,
                                      self.cand_grid, lon, lat, slot)
        redo = np.flatnonzero(degenerate)
        if redo.size:
            k_of = np.searchsorted(self.s_off, slot[redo], side="right") - 1
            for k in np.unique(k_of).tolist():
                sel = redo[k_of == k]
                local = self.parts[k]._full_edge_lookup(lon[sel], lat[sel],
                                                        slot[sel] - self.s_off[k])
                out[sel] = np.where(local >= 0, local + self.g_off[k], NONE)
        none = np.flatnonzero((out < 0) & ~degenerate) if tree else ()
        if len(none):
            out[none] = self._tree_lookup(lon[none], lat[none])
        return out

    def _on_district_border(self, slot: np.ndarray, lon: np.ndarray,
                            lat: np.ndarray) -> np.ndarray:
        """Grid index of points in border cells of the district lattice: each candidate
        district's lattice is asked (all pairs in one pass); the smallest global index
        (smallest code) wins."""
        dl = self.dl
        cnt = dl.b_count[slot]
        pt = np.repeat(np.arange(slot.size), cnt)
        cand = dl.cand_grid[np.repeat(dl.b_start[slot], cnt)
                            + (np.arange(pt.size) - np.repeat(np.cumsum(cnt) - cnt, cnt))]
        px, py = lon[pt], lat[pt]
        local = parts_labels(px, py, cand.astype(np.int64), *self._kernel_parts)
        slow = np.flatnonzero(local <= BOUNDARY)
        if slow.size:
            local[slow] = self._boundary_cells(-2 - local[slow], px[slow], py[slow],
                                               tree=False)
        big = np.iinfo(np.int64).max
        out = np.full(slot.size, big, dtype=np.int64)
        hit = local >= 0
        np.minimum.at(out, pt[hit], local[hit])
        # held by no candidate district's grids: the STRtree of all grids decides
        none = np.flatnonzero(out == big)
        out[none] = self._tree_lookup(lon[none], lat[none])
        return out

    def locate_one(self, lon: float, lat: float) -> tuple[int, int]:
        """(grid index, status) of one WGS 84 point; plain floats on the common path."""
        dl = self.dl
        fx = (lon - dl.x0) * dl.inv_cx
        fy = (lat - dl.y0) * dl.inv_cy
        if 0.0 <= fx < dl.nx and 0.0 <= fy < dl.ny:
            k = int(dl.labels[int(fy) * dl.nx + int(fx)])
            if k >= 0:
                gi, st = self.parts[k].locate_one(lon, lat)
                if st == OK:
                    return gi + int(self.g_off[k]), OK
        gis, sts = self.classify(np.array([lon], dtype=np.float64),
                                 np.array([lat], dtype=np.float64))
        return int(gis[0]), int(sts[0])

    def _part(self, gi: int) -> tuple[LookupIndex, int]:
        k = int(np.searchsorted(self.g_off, gi, side="right")) - 1
        return self.parts[k], gi - int(self.g_off[k])

    def hierarchy(self, gi: int) -> tuple[dict[str, Any] | None, dict[str, Any] | None,
                                          dict[str, Any]]:
        part, local = self._part(gi)
        return part.hierarchy(local)

    def district_for(self, gi: int) -> dict[str, Any]:
        return self._part(gi)[0].district

    def boundary_distance_m(self, gi: int, lon: float, lat: float) -> float:
        part, local = self._part(gi)
        return part.boundary_distance_m(local, lon, lat)

    def community_of(self, lon: float, lat: float) -> dict[str, Any] | None:
        for k in sorted(self.dl.tree.query(shapely.points(lon, lat), predicate="intersects")):
            found = self.parts[int(k)].community_of(lon, lat)
            if found is not None:
                return found
        return None


def make_index(rows: Sequence[Any], team: dict[str, list[dict[str, Any]]], *,
               generation: int | None, version: Any, settings: LookupSettings,
               previous: LookupIndex | None = None) -> LookupIndex:
    """A ``LookupIndex`` for one district, a ``CityIndex`` for several."""
    districts = {r.code for r in rows if r.level == "district"}
    cls = CityIndex if len(districts) > 1 else LookupIndex
    if cls is LookupIndex and isinstance(previous, CityIndex):
        previous = None
    return cls(rows, team, generation=generation, version=version, settings=settings,
               previous=previous)

