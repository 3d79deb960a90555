"""Per-district metric CRS and the district-boundary rule of layer validation (issue 16).

A city's districts may lie in different UTM zones: each area is measured in *its own*
district's metric CRS (the ``metric_srid`` the file or the database gives the district, else
the UTM zone of its centroid), and a grid must lie inside its district (by code) — it never
crosses into a neighbouring district. Geometries are EPSG:4326; areas in m².
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import Transformer
from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.core.codes import district_of
from geo.core.settings import DataSettings
from geo.data.crs import utm_epsg
from geo.data.rules import Collector, beyond_slivers, feature_codes


def district_table(conn: Connection | None, layer: gpd.GeoDataFrame | None,
                   mask: np.ndarray | None) -> tuple[dict[str, int], dict[str, Any]]:
    """(metric SRID, geometry) per district code: the file's valid district rows first, the
    database's current districts for the others."""
    srids: dict[str, int] = {}
    geoms: dict[str, Any] = {}
    if layer is not None and len(layer) and "code" in layer.columns:
        ok = mask if mask is not None and len(mask) == len(layer) else np.ones(len(layer), bool)
        have = layer["metric_srid"] if "metric_srid" in layer.columns else pd.Series(
            [None] * len(layer), index=layer.index, dtype=object)
        for code, srid, g, keep in zip(layer["code"], have, layer.geometry.array, ok,
                                       strict=True):
            if not keep or pd.isna(code) or g is None or shapely.is_empty(g):
                continue
            c = str(code)
            geoms[c] = g
            srids[c] = int(srid) if pd.notna(srid) else _utm_of(g)
    if conn is not None:
        for code, srid, wkb in conn.execute(text(
                "SELECT code, metric_srid, ST_AsBinary(geom) FROM area_current "
                "WHERE level = 'district' AND geom IS NOT NULL")).all():
            if code in geoms:
                continue
            g = shapely.from_wkb(bytes(wkb))
            geoms[code] = g
            srids[code] = int(srid) if srid else _utm_of(g)
    return srids, geoms


def _utm_of(g: Any) -> int:
    c = shapely.centroid(g)
    return utm_epsg(float(shapely.get_x(c)), float(shapely.get_y(c)))


class Metric:
    """WGS 84 geometries to metres: each in its district's CRS when codes are given (a code
    at or below district level), else (or for an unknown district) in ``default_srid``."""

    def __init__(self, default_srid: int, district_srids: dict[str, int]) -> None:
        self.default_srid = default_srid
        self.district_srids = district_srids
        self._tr: dict[int, Transformer] = {}

    def srid_of(self, code: Any) -> int:
        d = district_of(str(code)) if code is not None and not pd.isna(code) else None
        return self.district_srids.get(d or "", self.default_srid)

    def _transform(self, arr: np.ndarray, srid: int) -> np.ndarray:
        tr = self._tr.get(srid)
        if tr is None:
            tr = self._tr[srid] = Transformer.from_crs(4326, srid, always_xy=True)
        out: np.ndarray = shapely.transform(arr, lambda xy: np.column_stack(
            tr.transform(xy[:, 0], xy[:, 1])))
        return out

    def __call__(self, arr: np.ndarray, codes: Sequence[Any] | None = None) -> np.ndarray:
        arr = np.asarray(arr, dtype=object)
        if codes is None or not len(arr):
            return self._transform(arr, self.default_srid)
        srids = np.array([self.srid_of(c) for c in codes], dtype=np.int64)
        out = np.empty(len(arr), dtype=object)
        for srid in np.unique(srids).tolist():
            sel = srids == srid
            out[sel] = self._transform(arr[sel], int(srid))
        return out


def crossing_rules(layers: dict[str, gpd.GeoDataFrame], valid_mask: dict[str, np.ndarray],
                   district_geoms: dict[str, Any], metric: Metric, settings: DataSettings,
                   out: Collector) -> None:
    """Every grid inside its own district (the district of its code): what lies outside,
    measured in that district's CRS, may not exceed ``containment_tolerance_m2`` (slivers
    thinner than ``sliver_width_m`` ignored). The error names the districts it reaches into."""
    gdf = layers.get("grid")
    if gdf is None or not len(gdf) or "code" not in gdf.columns:
        return
    codes = feature_codes(gdf)
    mask = valid_mask.get("grid", np.zeros(len(gdf), bool))
    own = [district_of(str(c)) if c is not None and not pd.isna(c) else None for c in codes]
    idx = np.array([i for i in np.flatnonzero(mask) if own[i] in district_geoms], dtype=int)
    if not len(idx):
        return
    geoms = np.asarray(gdf.geometry.array, dtype=object)[idx]
    homes = np.array([district_geoms[own[i]] for i in idx], dtype=object)
    shapely.prepare(homes)
    covered = shapely.covers(homes, geoms)
    if covered.all():
        return
    sel = idx[~covered]
    part = shapely.difference(geoms[~covered], homes[~covered])
    outside = beyond_slivers(metric(part, [codes[i] for i in sel]),
                             settings.containment_tolerance_m2, settings.sliver_width_m)
    others = {c: g for c, g in district_geoms.items()}
    names = sorted(others)
    tree = shapely.STRtree(np.array([others[c] for c in names], dtype=object))
    for i, piece, m2 in zip(sel, part, outside, strict=True):
        if m2 <= settings.containment_tolerance_m2:
            continue
        into = sorted({names[k] for k in tree.query(piece, predicate="intersects")
                       if names[k] != own[i]
                       and shapely.area(shapely.intersection(piece, others[names[k]])) > 0})
        where = f" into district {', '.join(into)}" if into else ""
        out.add("grid", int(i), codes[i], f"crosses the boundary of its district {own[i]}"
                f"{where}: {m2:.1f} m² lies outside it (measured in EPSG:"
                f"{metric.srid_of(codes[i])}; tolerance {settings.containment_tolerance_m2} m²)",
                field="geometry", rule="crosses_district", outside_m2=float(m2),
                into=into)
