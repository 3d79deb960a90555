"""The per-feature rules of layer validation: allowed values, code rules, the hierarchy.

``geo.data.validate.validate_layers`` runs them; each adds what it finds to a ``Collector``.
Geometries are EPSG:4326; areas are measured in m² through the caller's ``metric`` transform
(each area in its own district's UTM zone, ``geo.data.zones``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.strtree import STRtree
from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.core.codes import LEVEL_LENGTHS, parent_code
from geo.core.errors import Problem
from geo.core.settings import DataSettings

AREA_LEVELS = ("district", "street", "community", "grid")
PARENT_LEVEL = {"street": "district", "community": "street", "grid": "community"}

STATION_KINDS = (
    "party_service_center", "party_service_station", "social_work_station", "elder_canteen",
    "elderly_daycare", "health_station", "rest_post",
)
TEAM_ROLES = (
    "grid_leader", "responsible_cadre", "community_police", "urban_management",
    "market_supervisor", "judicial_mediator", "community_medic", "grid_worker", "volunteer",
)
ROAD_CLASSES = (
    "footway", "path", "pedestrian", "steps", "cycleway", "living_street", "residential",
    "service", "unclassified", "tertiary", "secondary", "primary", "trunk", "crossing",
    "bridge", "tunnel", "other",
)
BARRIER_KINDS = ("arterial", "railway", "river")


class Collector:
    """Gathers problems; each records its rule so that the raised class can be specific."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(
        self, layer: str, index: Any, code: Any, reason: str, *, field: str | None = None,
        rule: str, **detail: Any,
    ) -> None:
        where = layer if index is None else f"{layer}[{index}]"
        if code is not None and not (isinstance(code, float) and np.isnan(code)):
            where += f" code={code}"
        self.problems.append(
            Problem(reason=reason, field=field, feature=where,
                    detail={"layer": layer, "index": None if index is None else int(index),
                            "code": None if code is None else str(code), "rule": rule, **detail})
        )


def feature_codes(gdf: pd.DataFrame) -> list[Any]:
    if "code" in gdf.columns:
        return list(gdf["code"])
    return [None] * len(gdf)



def db_areas(conn: Connection | None, codes: Iterable[str]) -> dict[str, Any]:
    codes = sorted({c for c in codes if c})
    if conn is None or not codes:
        return {}
    rows = conn.execute(
        text("SELECT code, ST_AsBinary(geom) FROM area_current WHERE code = ANY(:codes)"),
        {"codes": codes},
    ).all()
    return {r[0]: shapely.from_wkb(bytes(r[1])) for r in rows}



def _allowed(name: str, gdf: pd.DataFrame, out: Collector, col: str,
             allowed: tuple[str, ...]) -> None:
    """Values of ``col`` (where given) must be one of ``allowed``."""
    if col not in gdf.columns:
        return
    codes = feature_codes(gdf)
    bad = gdf[col].notna() & ~gdf[col].isin(allowed)
    for i in np.flatnonzero(bad.to_numpy()):
        out.add(name, i, codes[i], f"value {gdf[col].iloc[i]!r} not one of "
                f"{', '.join(allowed)}", field=col, rule="value")


def _non_negative(name: str, gdf: pd.DataFrame, out: Collector, col: str,
                  strict: bool = False) -> None:
    """Values of ``col`` (where given) must be numbers >= 0 (> 0 when ``strict``)."""
    if col not in gdf.columns:
        return
    codes = feature_codes(gdf)
    v = pd.to_numeric(gdf[col], errors="coerce")
    bad = gdf[col].notna() & (v.isna() | ((v <= 0) if strict else (v < 0)))
    for i in np.flatnonzero(bad.to_numpy()):
        out.add(name, i, codes[i], f"value {gdf[col].iloc[i]!r} must be a number "
                + ("> 0" if strict else ">= 0"), field=col, rule="value")


def _station_values(name: str, gdf: pd.DataFrame, out: Collector) -> None:
    _allowed(name, gdf, out, "kind", STATION_KINDS)


def _team_values(name: str, gdf: pd.DataFrame, out: Collector) -> None:
    _allowed(name, gdf, out, "role", TEAM_ROLES)
    if "grid_code" in gdf.columns:
        bad = gdf["grid_code"].notna() & ~gdf["grid_code"].astype(str).str.fullmatch(
            r"[0-9]{15}")
        for i in np.flatnonzero(bad.to_numpy()):
            out.add(name, i, None, "grid_code must have 15 digits", field="grid_code",
                    rule="code_rule")


def _walk_values(name: str, gdf: pd.DataFrame, out: Collector) -> None:
    _allowed(name, gdf, out, "road_class", ROAD_CLASSES)
    _non_negative(name, gdf, out, "length_m", strict=True)


def _barrier_values(name: str, gdf: pd.DataFrame, out: Collector) -> None:
    _allowed(name, gdf, out, "kind", BARRIER_KINDS)


def _building_values(name: str, gdf: pd.DataFrame, out: Collector) -> None:
    _non_negative(name, gdf, out, "households")
    _non_negative(name, gdf, out, "residents")


# Per-layer value rules (layers not named here have none).
VALUE_RULES: dict[str, Callable[[str, pd.DataFrame, Collector], None]] = {
    "station": _station_values,
    "grid_team": _team_values,
    "walk_edge": _walk_values,
    "barrier": _barrier_values,
    "building": _building_values,
}


def value_rules(name: str, gdf: pd.DataFrame, out: Collector) -> None:
    """The value rules of layer ``name`` (allowed kinds and roles, non-negative numbers)."""
    rule = VALUE_RULES.get(name)
    if rule is not None:
        rule(name, gdf, out)


def code_rules(layers: dict[str, gpd.GeoDataFrame], out: Collector,
                district_code: str | None) -> None:
    prefixes = tuple(district_code.split(",")) if district_code else ()  # a city: several
    for level in AREA_LEVELS:
        gdf = layers.get(level)
        if gdf is None or "code" not in gdf.columns:
            continue
        n = LEVEL_LENGTHS[level]
        code = gdf["code"].fillna("")
        for i, c in enumerate(code):
            if not c:
                continue
            if not (len(c) == n and c.isdigit()):
                out.add(level, i, c, f"{level} code must be {n} digits", field="code",
                        rule="code_rule")
                continue
            seq = int(c[-3:])  # the sequence number (a district's is not checked)
            if level == "street" and not 1 <= seq <= 399:
                out.add(level, i, c, "street number (digits 7-9) must be 001-399 "
                        "(001-099 street, 100-199 town, 200-399 township)", field="code",
                        rule="code_rule")
            elif level in ("community", "grid") and seq < 1:
                out.add(level, i, c, f"{level} sequence (last 3 digits) must be >= 001",
                        field="code", rule="code_rule")
            if level != "district" and prefixes and not c.startswith(prefixes):
                out.add(level, i, c, f"code does not start with the district code "
                        f"{district_code}", field="code", rule="code_rule")
            if level != "district" and "parent_code" in gdf.columns:
                p, prefix = gdf["parent_code"].iloc[i], parent_code(c)
                if p and p != prefix:
                    out.add(level, i, c, f"parent_code {p} is not the code's prefix {prefix}",
                            field="parent_code", rule="code_rule")


def beyond_slivers(parts: np.ndarray, tolerance_m2: float, width_m: float) -> np.ndarray:
    """Areas (m²) of metric ``parts`` not counting slivers thinner than ``width_m``: where a
    part's area exceeds ``tolerance_m2``, what survives a morphological opening by the width
    (erode by width/2, dilate back) is measured instead."""
    parts = np.asarray(parts, dtype=object)
    areas = np.asarray(shapely.area(parts), dtype=float)
    over = areas > tolerance_m2
    if width_m > 0 and over.any():
        half = width_m / 2
        opened = shapely.buffer(shapely.buffer(parts[over], -half, join_style="mitre"), half,
                                join_style="mitre")
        areas[over] = shapely.area(opened)
    return areas


def hierarchy_rules(conn: Connection | None, layers: dict[str, gpd.GeoDataFrame],
                     valid_mask: dict[str, np.ndarray], metric: Any, settings: DataSettings,
                     out: Collector) -> None:
    """Every area inside its parent (tolerance), and no two siblings overlapping."""
    for level in ("street", "community", "grid"):
        gdf = layers.get(level)
        if gdf is None or not len(gdf) or "parent_code" not in gdf.columns:
            continue
        mask = valid_mask.get(level, np.zeros(len(gdf), bool))
        parents_layer = layers.get(PARENT_LEVEL[level])
        parent_geom: dict[str, Any] = {}
        if parents_layer is not None and "code" in parents_layer.columns:
            pm = valid_mask.get(PARENT_LEVEL[level], np.zeros(len(parents_layer), bool))
            for c, g in zip(parents_layer["code"][pm], parents_layer.geometry.array[pm],
                            strict=True):
                parent_geom[c] = g
            known_in_file = set(parents_layer["code"].dropna())
        else:
            known_in_file = set()
        need = set(gdf["parent_code"].dropna()) - known_in_file
        from_db = db_areas(conn, need)
        parent_geom.update(from_db)
        codes = list(gdf["code"])
        pcodes = list(gdf["parent_code"])
        for i, p in enumerate(pcodes):
            if p and p not in known_in_file and p not in from_db:
                out.add(level, i, codes[i], f"parent {PARENT_LEVEL[level]} {p} exists neither "
                        "in the file nor in the database", field="parent_code",
                        rule="unknown_parent")
        idx = np.array([i for i in np.flatnonzero(mask) if pcodes[i] in parent_geom], int)
        geoms = np.asarray(gdf.geometry.array, dtype=object)
        if len(idx):
            # Difference in the storage CRS (exact for shared edges), area in metres.
            parents = np.array([parent_geom[pcodes[i]] for i in idx], dtype=object)
            sticking = beyond_slivers(metric(shapely.difference(geoms[idx], parents),
                                             [codes[i] for i in idx]),
                                      settings.containment_tolerance_m2, settings.sliver_width_m)
            for i, a in zip(idx, sticking, strict=True):
                if a > settings.containment_tolerance_m2:
                    out.add(level, i, codes[i], f"not inside its {PARENT_LEVEL[level]} "
                            f"{pcodes[i]}: {a:.1f} m² lies outside (tolerance "
                            f"{settings.containment_tolerance_m2} m², slivers thinner than "
                            f"{settings.sliver_width_m} m ignored)", field="geometry",
                            rule="not_inside_parent", outside_m2=float(a))
        # Sibling overlaps: STRtree candidate pairs, then exact intersection areas.
        sidx = np.flatnonzero(mask)
        if len(sidx) < 2:
            continue
        gm = geoms[sidx]
        tree = STRtree(gm)
        a, b = tree.query(gm, predicate="intersects")
        keep = a < b
        a, b = a[keep], b[keep]
        par = np.array([pcodes[i] for i in sidx], dtype=object)
        same = par[a] == par[b]
        a, b = a[same], b[same]
        if not len(a):
            continue
        areas = beyond_slivers(metric(shapely.intersection(gm[a], gm[b]),
                                      [codes[sidx[x]] for x in a]),
                               settings.overlap_tolerance_m2, settings.sliver_width_m)
        for x, y, ar in zip(a, b, areas, strict=True):
            if ar > settings.overlap_tolerance_m2:
                i, j = sidx[x], sidx[y]
                out.add(level, i, codes[i], f"overlaps sibling {level} {codes[j]} (feature "
                        f"{j}) by {ar:.1f} m² (tolerance {settings.overlap_tolerance_m2} m²)",
                        field="geometry", rule="overlap", other=str(codes[j]),
                        overlap_m2=float(ar))

