"""Validation of layers before anything is written.

``validate_layers`` checks every rule on every feature and raises ONE error that lists every
problem (layer, feature index and code, field, reason). Nothing here writes to the database.

Layers are GeoDataFrames in EPSG:4326 keyed by the layer names of the contract (district,
street, community, grid, grid_team, building, station, walk_edge, barrier, compound). Areas and
overlaps are measured in metres in the district's metric CRS (a UTM zone).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import Transformer
from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.core.codes import parent_code
from geo.core.errors import (
    InvalidInput,
    OutsideDistrict,
    PayloadTooLarge,
    Problem,
    SwappedCoordinates,
)
from geo.core.settings import DataSettings
from geo.data.crs import metric_crs_for, polygonal, utm_epsg
from geo.data.rules import AREA_LEVELS as AREA_LEVELS
from geo.data.rules import STATION_KINDS as STATION_KINDS
from geo.data.rules import (
    Collector,
    code_rules,
    feature_codes,
    hierarchy_rules,
    value_rules,
)
from geo.data.zones import Metric, crossing_rules, district_table

log = logging.getLogger(__name__)


LAYERS = AREA_LEVELS + ("grid_team", "building", "station", "walk_edge", "barrier", "compound")
# Above the districts (issue 16): codes checked, geometry optional (the union of the districts).
PARENT_LAYERS = {"city": 4, "province": 2}


def _parent_rules(parents: dict[str, gpd.GeoDataFrame], out: Collector) -> None:
    for name, gdf in parents.items():
        n = PARENT_LAYERS[name]
        for i, c in enumerate(gdf["code"].astype(str) if "code" in gdf.columns else []):
            if not (len(c) == n and c.isdigit()):
                out.add(name, i, c, f"{name} code must be {n} digits", field="code",
                        rule="code_rule")

REQUIRED: dict[str, tuple[str, ...]] = {
    "district": ("code", "name", "metric_srid"),
    "street": ("code", "parent_code", "name"),
    "community": ("code", "parent_code", "name"),
    "grid": ("code", "parent_code", "name", "responsible_body"),
    "grid_team": ("grid_code", "role", "name"),
    "building": ("code", "households"),
    "station": ("code", "name", "kind"),
    "walk_edge": ("source", "target", "length_m", "road_class"),
    "barrier": ("kind",),
    "compound": ("code",),
}

POLYGONAL = ("Polygon", "MultiPolygon")
GEOM_TYPES: dict[str, tuple[str, ...]] = {
    "district": POLYGONAL,
    "street": POLYGONAL,
    "community": POLYGONAL,
    "grid": POLYGONAL,
    "compound": POLYGONAL,
    "building": ("Point",) + POLYGONAL,
    "station": ("Point",),
    "walk_edge": ("LineString",),
    "barrier": ("LineString", "MultiLineString") + POLYGONAL,
}

# Codes clash only within the file: ``geo.data.store.write_layers`` closes the current versions of
# every area level it writes and replaces the building/station/compound tables wholesale, so a
# code already in the database is replaced, never duplicated.

# China's bounding box (lon 73..135.1 E, lat 18..53.6 N), for the swapped lat/lon test.
CHINA_BBOX = (73.0, 18.0, 135.1, 53.6)


def _str_codes(series: pd.Series) -> pd.Series:
    """Codes as strings ('' for missing); numeric codes read from files are turned back."""
    def one(v: Any) -> str:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return ""
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            return str(int(v))
        return str(v).strip()
    return series.map(one)


def _db_district(conn: Connection | None) -> tuple[Any, int | None, str | None]:
    if conn is None:
        return None, None, None
    row = conn.execute(text(
        "SELECT ST_AsBinary(ST_Union(geom)), max(metric_srid), string_agg(code, ',' ORDER BY code) "
        "FROM area_current WHERE level = 'district'"
    )).first()
    if row is None or row[0] is None:
        return None, None, None
    return shapely.from_wkb(bytes(row[0])), row[1], row[2]



def _in_bbox(x: np.ndarray, y: np.ndarray, bbox: tuple[float, float, float, float]) -> np.ndarray:
    return (x >= bbox[0]) & (x <= bbox[2]) & (y >= bbox[1]) & (y <= bbox[3])


@dataclass
class _Check:
    """The state of one validation run, handed from rule to rule."""

    conn: Connection | None
    layers: dict[str, gpd.GeoDataFrame]
    repair: bool
    settings: DataSettings
    out: Collector = field(default_factory=Collector)
    valid_mask: dict[str, np.ndarray] = field(default_factory=dict)
    district_geom: Any = None
    metric_srid: int | None = None
    district_code: str | None = None
    to_metric: Transformer | None = None
    metric_of: Metric | None = None  # per district (issue 16), set with ``to_metric``
    district_geoms: dict[str, Any] = field(default_factory=dict)

    def metric(self, arr: np.ndarray, codes: Any = None) -> np.ndarray:
        """WGS 84 geometries in metres: each in its district's metric CRS when ``codes``
        (area codes, one per geometry) are given, else in the first district's
        (``to_metric`` must be set)."""
        assert self.metric_of is not None
        return self.metric_of(arr, codes)

    def mask(self, name: str) -> np.ndarray:
        return self.valid_mask.get(name, np.zeros(0, bool))


def _known_layers(ck: _Check) -> None:
    """Unknown layer names are reported and dropped."""
    for name in ck.layers:
        if name not in LAYERS:
            ck.out.add(name, None, None, f"unknown layer; expected one of {', '.join(LAYERS)} "
                       "(name it with --layer / layer=)", field="layer", rule="unknown_layer")
    ck.layers = {k: v for k, v in ck.layers.items() if k in LAYERS}


def _derived(ck: _Check) -> None:
    """Derive what follows from the data instead of requiring it: an area's missing parent
    code is its code's prefix; a district's missing metric CRS is the UTM zone of its centroid.
    Derived values are logged and returned with the layers."""
    for name in ("street", "community", "grid"):
        gdf = ck.layers.get(name)
        if gdf is None or "code" not in gdf.columns:
            continue
        have = gdf["parent_code"] if "parent_code" in gdf.columns else pd.Series(
            [None] * len(gdf), index=gdf.index, dtype=object)
        empty = have.isna() | have.map(lambda v: isinstance(v, str) and not v.strip())
        if empty.any():
            derived = gdf["code"].map(lambda c: None if pd.isna(c) else parent_code(
                str(int(c)) if isinstance(c, float) and float(c).is_integer() else str(c)))
            gdf["parent_code"] = have.where(~empty, derived).astype(object)
            log.info("%s: parent_code derived from the code for %d features", name,
                     int(empty.sum()))
    gdf = ck.layers.get("district")
    if gdf is not None and len(gdf):
        have = gdf["metric_srid"] if "metric_srid" in gdf.columns else pd.Series(
            [None] * len(gdf), index=gdf.index, dtype=object)
        if have.isna().any():
            cent = shapely.centroid(np.asarray(gdf.geometry.array, dtype=object))
            utm = [None if g is None or shapely.is_empty(g) else
                   utm_epsg(shapely.get_x(g), shapely.get_y(g)) for g in cent]
            gdf["metric_srid"] = [h if pd.notna(h) else u
                                  for h, u in zip(have, utm, strict=True)]
            log.info("district: metric_srid derived from its location (UTM)")


def _fields_and_values(ck: _Check) -> None:
    """Required fields, code normalisation, per-field value rules."""
    for name, gdf in ck.layers.items():
        for col in REQUIRED[name]:
            if col not in gdf.columns:
                ck.out.add(name, None, None, "required field is missing from the layer",
                           field=col, rule="missing_field")
                continue
            missing = gdf[col].isna().to_numpy() | gdf[col].map(
                lambda v: isinstance(v, str) and not v.strip()).to_numpy(bool)
            for i in np.flatnonzero(missing):
                ck.out.add(name, i, feature_codes(gdf)[i], "required value is empty", field=col,
                           rule="missing_value")
        for col in ("code", "parent_code", "grid_code", "community_code"):
            if col in gdf.columns:
                gdf[col] = _str_codes(gdf[col]).replace("", None)
        value_rules(name, gdf, ck.out)


def _polygonal_or_self(g: Any) -> Any:
    """The polygonal part of a make_valid result; the geometry itself when it has none."""
    part = polygonal(g)
    return g if part is None else part


def _repair(ck: _Check, name: str, gdf: gpd.GeoDataFrame, ok: np.ndarray,
            invalid: np.ndarray, codes: list[Any]) -> tuple[gpd.GeoDataFrame, np.ndarray]:
    """``gdf`` with its invalid geometries made valid; those still invalid are reported."""
    fixed = shapely.make_valid(np.asarray(gdf.geometry.array)[invalid])
    if GEOM_TYPES[name] == POLYGONAL or name == "building":
        fixed = np.array([_polygonal_or_self(g) for g in fixed], dtype=object)
    arr = np.asarray(gdf.geometry.array, dtype=object).copy()
    arr[invalid] = fixed
    gdf = gdf.set_geometry(gpd.GeoSeries(arr, index=gdf.index, crs=gdf.crs))
    ck.layers[name] = gdf
    log.info("repaired %d invalid geometries in layer %s", int(invalid.sum()), name)
    still = ok & ~shapely.is_valid(gdf.geometry.array)
    for i in np.flatnonzero(still):
        ck.out.add(name, i, codes[i], "geometry still invalid after make_valid",
                   field="geometry", rule="invalid_geometry")
    return gdf, still


_TYPE_NAMES = np.array(["Point", "LineString", "LinearRing", "Polygon", "MultiPoint",
                        "MultiLineString", "MultiPolygon", "GeometryCollection"])


def _layer_geometry(ck: _Check, name: str, gdf: gpd.GeoDataFrame) -> np.ndarray:
    """Presence, validity (optionally repaired) and type of one layer's geometries; returns
    the mask of the features that pass."""
    if not isinstance(gdf, gpd.GeoDataFrame) or gdf.geometry.name not in gdf.columns:
        ck.out.add(name, None, None, "layer has no geometry column", field="geometry",
                   rule="missing_geometry")
        return np.zeros(len(gdf), bool)
    geoms = gdf.geometry.array
    ok = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    codes = feature_codes(gdf)
    for i in np.flatnonzero(~ok):
        ck.out.add(name, i, codes[i], "geometry is missing or empty", field="geometry",
                   rule="missing_geometry")
    invalid = ok & ~shapely.is_valid(geoms)
    if invalid.any() and ck.repair:
        gdf, invalid = _repair(ck, name, gdf, ok, invalid, codes)
        geoms = gdf.geometry.array
    elif invalid.any():
        reasons = shapely.is_valid_reason(np.asarray(geoms)[invalid])
        for i, why in zip(np.flatnonzero(invalid), reasons, strict=True):
            ck.out.add(name, i, codes[i], f"invalid geometry: {why} "
                       "(use --repair to fix with make_valid)", field="geometry",
                       rule="invalid_geometry", why=str(why))
    types = np.asarray(shapely.get_type_id(geoms))
    tnames = np.where(types >= 0, _TYPE_NAMES[np.clip(types, 0, 7)], "None")
    wrong = ok & ~np.isin(tnames, GEOM_TYPES[name])
    for i in np.flatnonzero(wrong):
        ck.out.add(name, i, codes[i], f"geometry type {tnames[i]} not allowed; expected "
                   f"{' or '.join(GEOM_TYPES[name])}", field="geometry", rule="geometry_type")
    passed: np.ndarray = ok & ~invalid & ~wrong
    return passed


def _geometry(ck: _Check) -> None:
    """Geometry: presence, type, validity (optionally repaired), layer by layer."""
    for name, gdf in list(ck.layers.items()):
        if name in GEOM_TYPES:
            ck.valid_mask[name] = _layer_geometry(ck, name, gdf)


def _district(ck: _Check) -> None:
    """The district (the layer's own, else the database's current one) and the metric CRS."""
    dl = ck.layers.get("district")
    if dl is not None and len(dl) and ck.mask("district").any():
        ck.district_geom = shapely.union_all(dl.geometry.array[ck.valid_mask["district"]])
        if "metric_srid" in dl.columns and dl["metric_srid"].notna().any():
            ck.metric_srid = int(dl["metric_srid"].dropna().iloc[0])
        if "code" in dl.columns and dl["code"].notna().any():
            # several districts (a city): their codes, comma-separated
            ck.district_code = ",".join(sorted(set(dl["code"].dropna().astype(str))))
    else:
        ck.district_geom, ck.metric_srid, ck.district_code = _db_district(ck.conn)
    if ck.metric_srid is None:
        ck.metric_srid = _metric_srid_of(ck)
    if ck.metric_srid:
        ck.to_metric = Transformer.from_crs(4326, ck.metric_srid, always_xy=True)
        srids, ck.district_geoms = district_table(ck.conn, dl, ck.valid_mask.get("district"))
        ck.metric_of = Metric(ck.metric_srid, srids)


def _metric_srid_of(ck: _Check) -> int | None:
    """The UTM zone of the district, else of all valid features (None if nothing sensible)."""
    if ck.district_geom is not None:
        return metric_crs_for(ck.district_geom)
    all_bounds = [g.geometry.total_bounds for n, g in ck.layers.items()
                  if n in GEOM_TYPES and ck.mask(n).any()]
    if not all_bounds:
        return None
    b = np.array(all_bounds)
    bx = (np.nanmin(b[:, 0]), np.nanmin(b[:, 1]), np.nanmax(b[:, 2]), np.nanmax(b[:, 3]))
    if abs(bx[1]) <= 90 and abs(bx[3]) <= 90:
        return metric_crs_for(bx)
    return None


def _swapped(ck: _Check, name: str, geoms: np.ndarray, codes: list[Any],
             region_bbox: tuple[float, float, float, float] | None) -> np.ndarray:
    """Features whose centre reads as lat, lon (swapped), reported; returns their mask."""
    b = shapely.bounds(geoms)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    region_hit = _in_bbox(cy, cx, CHINA_BBOX) & ~_in_bbox(cx, cy, CHINA_BBOX)
    if region_bbox is not None:
        region_hit |= _in_bbox(cy, cx, region_bbox) & ~_in_bbox(cx, cy, region_bbox)
    bad_lat = (np.abs(b[:, 1]) > 90) | (np.abs(b[:, 3]) > 90)
    swapped = (region_hit | bad_lat) & ~shapely.is_missing(geoms)
    for i in np.flatnonzero(swapped):
        ck.out.add(name, i, codes[i], f"coordinates look swapped (lat, lon): centre "
                   f"({cx[i]:.6f}, {cy[i]:.6f}) read as lon,lat"
                   + (" has |lat| > 90" if bad_lat[i] else
                      f" lies outside, swapped ({cy[i]:.6f}, {cx[i]:.6f}) lies inside the "
                      "district/China"), field="geometry", rule="swapped_coordinates")
    return swapped  # type: ignore[no-any-return]


def _outside(ck: _Check, name: str, geoms: np.ndarray, codes: list[Any],
             district_zone: Any) -> None:
    """Features outside the district (beyond ``district_tolerance_m``), reported and masked."""
    district_geom = ck.district_geom
    idx = np.flatnonzero(ck.valid_mask[name])
    # Exact test in the storage CRS; only what sticks out is measured in metres.
    shapely.prepare(district_geom)  # prepared first argument: fast for 10^5 features
    inside = shapely.covers(district_geom, geoms[idx])
    if name == "barrier":  # a river or railway may cross the district: must touch it
        inside = shapely.intersects(district_geom, geoms[idx])
    out_idx = idx[~inside]
    if len(out_idx):
        part = shapely.difference(geoms[out_idx], district_geom)
        # covers() can fail on a 1e-17° crossing of a zigzag border (a feature clipped exactly
        # to it): nothing is then outside, and covered_by(EMPTY, zone) would be False
        empty = shapely.is_empty(part)
        inside[~inside] = empty | shapely.covered_by(ck.metric(part), district_zone)
    for i in idx[~inside]:
        ck.out.add(name, i, codes[i], "feature lies outside the district "
                   f"{ck.district_code or ''} (tolerance {ck.settings.district_tolerance_m} m)",
                   field="geometry", rule="outside_district")
        ck.valid_mask[name][i] = False


def _placement(ck: _Check) -> None:
    """Swapped lat/lon and outside-the-district."""
    region_bbox = None
    district_zone = None
    if ck.district_geom is not None:
        minx, miny, maxx, maxy = ck.district_geom.bounds
        region_bbox = (minx - 0.05, miny - 0.05, maxx + 0.05, maxy + 0.05)
        if ck.to_metric is not None:
            dm = ck.metric(np.array([ck.district_geom], dtype=object))[0]
            district_zone = dm.buffer(ck.settings.district_tolerance_m)
            shapely.prepare(district_zone)
    for name, gdf in ck.layers.items():
        if name not in GEOM_TYPES or name == "district" or not len(gdf):
            continue
        geoms = np.asarray(gdf.geometry.array, dtype=object)
        codes = feature_codes(gdf)
        swapped = _swapped(ck, name, geoms, codes, region_bbox)
        ck.valid_mask[name] = ck.valid_mask[name] & ~swapped
        if district_zone is not None and ck.valid_mask[name].any():
            _outside(ck, name, geoms, codes, district_zone)


def _duplicate_codes(ck: _Check) -> None:
    """Duplicate codes within a layer, and area codes used in two area layers."""
    for name, gdf in ck.layers.items():
        if "code" not in gdf.columns or not len(gdf):
            continue
        codes = gdf["code"]
        dup = codes.notna() & codes.duplicated(keep=False)
        for i in np.flatnonzero(dup.to_numpy()):
            first = int(np.flatnonzero((codes == codes.iloc[i]).to_numpy())[0])
            ck.out.add(name, i, codes.iloc[i], f"duplicate code (also feature {first})"
                       if first != i else "duplicate code (repeated later in the layer)",
                       field="code", rule="duplicate_code")
        if name in AREA_LEVELS:
            _cross_layer_codes(ck, name, codes)


def _cross_layer_codes(ck: _Check, name: str, codes: pd.Series) -> None:
    other = [n for n in AREA_LEVELS if n != name and n in ck.layers and
             "code" in ck.layers[n].columns]
    for n in other:
        clash = codes.isin(set(ck.layers[n]["code"].dropna()))
        for i in np.flatnonzero(clash.to_numpy()):
            ck.out.add(name, i, codes.iloc[i], f"code also used in layer {n}",
                       field="code", rule="duplicate_code")


def _codes_step(ck: _Check) -> None:
    """Code rules (lengths, sequence numbers, prefixes)."""
    code_rules(ck.layers, ck.out, ck.district_code)


def _hierarchy_step(ck: _Check) -> None:
    """Every area inside its parent, no sibling overlaps (needs the metric CRS)."""
    if ck.to_metric is not None:
        hierarchy_rules(ck.conn, ck.layers, ck.valid_mask, ck.metric, ck.settings, ck.out)


def _crossing_step(ck: _Check) -> None:
    """No grid crossing the boundary of its district (each measured in its district's CRS)."""
    if ck.metric_of is not None:
        crossing_rules(ck.layers, ck.valid_mask, ck.district_geoms, ck.metric_of, ck.settings,
                       ck.out)


# The rules, in order: each reads and extends the state of the run.
RULES: tuple[Callable[[_Check], None], ...] = (
    _known_layers, _derived, _fields_and_values, _geometry, _district, _placement, _duplicate_codes,
    _codes_step, _hierarchy_step, _crossing_step,
)


def validate_layers(
    conn: Connection | None,
    layers: dict[str, gpd.GeoDataFrame],
    *,
    repair: bool = False,
    settings: DataSettings | None = None,
) -> dict[str, gpd.GeoDataFrame]:
    """Check every rule on every feature of ``layers`` (EPSG:4326) before anything is written.

    Returns the layers (with codes normalised to strings and, when ``repair``, invalid geometry
    replaced by ``shapely.make_valid``). Raises ``PayloadTooLarge`` when the layers hold more than
    ``settings.max_import_features`` features, else one ``InvalidInput`` (or the more specific
    ``SwappedCoordinates`` / ``OutsideDistrict`` when every problem is of that kind) listing every
    problem. ``conn`` (may be None) supplies the current district, parent areas and existing codes.
    """
    settings = settings or DataSettings()
    total = sum(len(g) for g in layers.values())
    if total > settings.max_import_features:
        raise PayloadTooLarge(
            f"{total} features exceed the import limit of {settings.max_import_features}",
            [Problem(reason=f"{total} features > max_import_features="
                     f"{settings.max_import_features}", field="features")],
        )
    parents = {n: layers[n] for n in PARENT_LAYERS if n in layers}
    ck = _Check(conn, {name: gdf.copy() for name, gdf in layers.items() if name not in parents},
                repair, settings)
    for rule in RULES:
        rule(ck)
    _parent_rules(parents, ck.out)
    problems = ck.out.problems
    if problems:
        rules = {p.detail.get("rule") for p in problems}
        cls: type[InvalidInput] = InvalidInput
        if rules == {"swapped_coordinates"}:
            cls = SwappedCoordinates
        elif rules == {"outside_district"}:
            cls = OutsideDistrict
        raise cls(f"{len(problems)} problem(s) found; nothing was written", problems)
    return {**ck.layers, **parents}
