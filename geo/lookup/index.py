"""The in-process lookup index of one generation: lattice + STRtree over its grids.

A point in an unmarked lattice cell is answered by arithmetic (two multiplications, a floor and
one array read); a point in a boundary cell by an exact edge test, else by the shapely 2
STRtree (queried vectorised with ``predicate="intersects"``). Coordinates are WGS 84 degrees.

**Boundary rule**: a grid holds the points of its closed polygon (interior and boundary). A point
on a boundary shared by several grids goes to the grid with the **smallest code**.

A point in no grid is checked against the district polygon: inside it, it is flagged ``no_grid``;
outside it, ``outside_district``, unless the point with lon and lat swapped lands inside, which
is flagged ``swapped``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import shapely

from geo.core.codes import prefix_at, street_of
from geo.core.errors import NotFound, Problem
from geo.lookup.kernel import lattice_labels
from geo.lookup.lattice import BOUNDARY, Lattice
from geo.lookup.settings import LookupSettings

# Status codes of a batch lookup, one per point.
OK, NO_GRID, OUTSIDE, SWAPPED, INVALID, OUT_OF_RANGE = 0, 1, 2, 3, 4, 5
LEVELS = ("province", "city", "district", "street", "community", "grid")
STATUS_NAMES = {
    OK: "ok",
    NO_GRID: "no_grid",
    OUTSIDE: "outside_district",
    SWAPPED: "swapped",
    INVALID: "not_a_number",
    OUT_OF_RANGE: "out_of_range",
}


class LookupIndex(Lattice):
    """Lattice + STRtree over one generation's grids (see the module docstring)."""

    def __init__(self, rows: Sequence[Any], team: dict[str, list[dict[str, Any]]], *,
                 generation: int | None, version: Any, settings: LookupSettings,
                 previous: LookupIndex | None = None) -> None:
        """Index ``rows`` (area rows of one generation). With ``previous`` (the index this one
        replaces) and few changed grids, only the lattice cells around them are recomputed."""
        t0 = time.perf_counter()
        self.generation = generation
        self.version = version
        self.settings = settings
        by_level: dict[str, list[Any]] = {level: [] for level in LEVELS}
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
        for level in LEVELS[:-1]:
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
        # the lattice covers the district too: a point known to lie in the district then lies
        # in the lattice (``CityIndex`` skips the bounds test for such points)
        self.lattice_cover = tuple(float(v) for v in shapely.bounds(self.district_geom))
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
        if plan is None or previous is None:
            self._build_lattice(settings)
        else:
            self._update_lattice(previous, *plan)
        self._fragments: dict[int, bytes] = {}
        self.batch_templates: np.ndarray | None = None  # geo.lookup.files.batch_entries
        self.build_s = time.perf_counter() - t0

    # -- lookups -------------------------------------------------------------------------
    def grid_index(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Grid index per WGS 84 point (order of ``grid_codes``), -1 where no grid holds it."""
        lon = np.ascontiguousarray(lon, dtype=np.float64)
        lat = np.ascontiguousarray(lat, dtype=np.float64)
        out: np.ndarray = lattice_labels(lon, lat, self.x0, self.y0, self.inv_cx, self.inv_cy,
                                         self.nx, self.ny, self.labels)
        slow = np.flatnonzero(out <= BOUNDARY)
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
        st[ok[self._in_districts(lon[ok], lat[ok])]] = NO_GRID
        cand = np.flatnonzero(finite & (st != NO_GRID))
        if cand.size:
            sw = self._in_districts(lat[cand], lon[cand])
            st[cand[sw]] = SWAPPED
        bad_range = finite & ~in_range & (st != SWAPPED)
        st[bad_range] = OUT_OF_RANGE
        return st

    def _in_districts(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """True where the WGS 84 point lies in the interior of the district(s)."""
        inside: np.ndarray = shapely.contains_xy(self.district_geom, lon, lat)
        return inside

    def community_of(self, lon: float, lat: float) -> dict[str, Any] | None:
        if self.comm_tree is None:
            return None
        hits = self.comm_tree.query(shapely.points(lon, lat), predicate="intersects")
        if len(hits) == 0:
            return None
        return self.areas.get(self.comm_codes[int(np.min(hits))])

    def hierarchy(self, gi: int) -> tuple[dict[str, Any] | None, dict[str, Any] | None,
                                          dict[str, Any]]:
        """(street, community, grid) dicts of grid index ``gi`` (by the code hierarchy)."""
        grid = self.grid_info[gi]
        community = self.areas.get(grid["parent_code"])
        street = self.areas.get(street_of(grid["parent_code"]) or "") \
            if grid["parent_code"] else None
        return street, community, grid

    def district_for(self, gi: int) -> dict[str, Any]:
        """The district dict of grid index ``gi``."""
        return self.district

    def upper_for(self, gi: int) -> list[dict[str, Any]]:
        """The province and city dicts above grid ``gi`` (those the generation holds)."""
        code = self.grid_codes[gi]
        return [a for a in (self.areas.get(prefix_at(code, lvl) or "")
                            for lvl in ("province", "city")) if a]

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
            tt = np.clip(np.where(den > 0, -(ax * dx + ay * dy) / den, 0.0), 0.0, 1.0)
        return float(np.sqrt(np.min((ax + tt * dx) ** 2 + (ay + tt * dy) ** 2)))

    def locate_one(self, lon: float, lat: float) -> tuple[int, int]:
        """(grid index, status) of one WGS 84 point: pure-Python arithmetic for interior cells
        (the same float operations as ``grid_index``), the array path otherwise."""
        fx = (lon - self.x0) * self.inv_cx
        fy = (lat - self.y0) * self.inv_cy
        if 0.0 <= fx < self.nx and 0.0 <= fy < self.ny:
            lab = int(self.labels[int(fy) * self.nx + int(fx)])
            if lab >= 0:
                return lab, OK
            if lab <= BOUNDARY:
                gi = self._edge_lookup_one(lon, lat, -2 - lab)
                if gi >= 0:
                    return gi, OK
        gis, sts = self.classify(np.array([lon], dtype=np.float64),
                                 np.array([lat], dtype=np.float64))
        return int(gis[0]), int(sts[0])

    def fragment(self, gi: int) -> bytes:
        """Pre-serialised JSON tail for grid ``gi``: generation, areas, district..grid, '}'."""
        frag = self._fragments.get(gi)
        if frag is None:
            street, community, grid = self.hierarchy(gi)
            district = self.district_for(gi)
            upper = self.upper_for(gi)
            body = orjson.dumps({
                "generation": self.generation,
                "areas": upper + [a for a in (district, street, community, grid) if a],
                **{a["type"]: a for a in upper},
                "district": district, "street": street, "community": community,
                "grid": grid,
            })
            frag = body[1:]  # drop the leading '{'
            self._fragments[gi] = frag
        return frag
