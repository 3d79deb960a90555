"""Point lookup, the public functions: which district, street, community and grid hold a point.

PostGIS stays the source of truth; answers come from the cached in-process index
(``geo.lookup.cache``). Input points may be in WGS 84, CGCS2000, GCJ-02 or BD-09 degrees; answers
are WGS 84.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from geo.core.errors import InvalidInput, NotFound, OutsideDistrict, Problem, SwappedCoordinates
from geo.data.coords import normalise_crs, to_wgs84
from geo.lookup.cache import get_index
from geo.lookup.index import INVALID, NO_GRID, OK, OUT_OF_RANGE, SWAPPED, LookupIndex
from geo.lookup.settings import LookupSettings


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
    upper: list[dict[str, Any]] = field(default_factory=list)  # province, city (when known)

    @property
    def areas(self) -> list[dict[str, Any]]:
        return self.upper + [a for a in (self.district, self.street, self.community, self.grid)
                             if a]

    def as_dict(self) -> dict[str, Any]:
        return {
            "point": {"lon": self.lon, "lat": self.lat, "crs": "wgs84"},
            "input": self.input,
            "generation": self.generation,
            "boundary_distance_m": self.boundary_distance_m,
            "areas": self.areas,
            **{a["type"]: a for a in self.upper},
            "district": self.district,
            "street": self.street,
            "community": self.community,
            "grid": self.grid,
        }


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
            lon=lon, lat=lat, district=index.district_for(g), street=street,
            community=community, grid=grid,
            boundary_distance_m=index.boundary_distance_m(g, lon, lat),
            generation=index.generation, input=input_echo or {}, upper=index.upper_for(g),
        )
    raise status_error(st, index, lon, lat, crs)


def status_error(st: int, index: LookupIndex, lon: float, lat: float, crs: str) -> Exception:
    """The domain error of status ``st`` (not OK) for the WGS 84 point (lon, lat)."""
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


def lookup_coordinates(x: float, y: float, crs: str) -> tuple[float, float, str]:
    """(lon, lat, crs name) to look the point (x, y) in ``crs`` up at, in WGS 84 degrees.

    A point out of range in a converted system (GCJ-02, BD-09) may have lon and lat swapped: it
    is converted with them swapped and swapped back, so that ``LookupIndex.classify`` finds the
    swap (SWAPPED) or the range error (OUT_OF_RANGE) exactly as for a WGS 84 point.
    """
    wx, wy, name = to_wgs84_checked(x, y, crs)
    if name not in ("wgs84", "cgcs2000") and (abs(x) > 180 or abs(y) > 90):
        sx, sy, _ = to_wgs84_checked(y, x, name)
        return sy, sx, name
    return wx, wy, name


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
    wlon, wlat, name = lookup_coordinates(lon, lat, crs)
    index = get_index(conn, at=at, max_staleness_ms=max_staleness_ms, settings=settings)
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
