"""Geometry helpers of planning: input geometries (shapely, GeoJSON or WKT, EPSG:4326)
as MultiPolygons, and the district's metric SRID (UTM, for m²)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import shapely
from shapely.geometry import shape
from sqlalchemy.engine import Connection

from geo.core.errors import InvalidInput, Problem
from geo.data.crs import district_metric_srid


def metric_srid(conn: Connection, district_code: str | None = None) -> int:
    """The metric SRID planning measures in: the district's (``geo.data.crs``, one helper)."""
    return district_metric_srid(conn, district_code)


def as_geom(value: Any, what: str) -> Any:
    """A shapely geometry from a shapely object, GeoJSON dict/str or WKT (EPSG:4326)."""
    try:
        if isinstance(value, shapely.Geometry):
            g = value
        elif isinstance(value, dict):
            g = shape(value.get("geometry", value))
        elif isinstance(value, str) and value.lstrip().startswith("{"):
            g = shape(json.loads(value))
        else:
            g = shapely.from_wkt(value)
    except Exception as exc:  # shapely/json raise several types
        raise InvalidInput(f"{what}: not a geometry",
                           [Problem(reason=str(exc), field=what)]) from exc
    if g is None or g.is_empty:
        raise InvalidInput(f"{what}: empty geometry", [Problem(reason="empty", field=what)])
    return g


def to_multipolygon(g: Any) -> Any:
    if not g.is_valid:
        raise InvalidInput("invalid polygon", [Problem(
            reason=shapely.is_valid_reason(g), field="geometry")])
    if g.geom_type == "Polygon":
        return shapely.MultiPolygon([g])
    if g.geom_type == "MultiPolygon":
        return g
    polys = [p for p in getattr(g, "geoms", []) if p.geom_type == "Polygon"]
    if not polys:
        raise InvalidInput("geometry must be a polygon",
                           [Problem(reason=f"got {g.geom_type}", field="geometry")])
    return shapely.MultiPolygon(polys)


def to_multipolygons(a: np.ndarray) -> np.ndarray:
    return np.asarray([to_multipolygon(g) for g in a], dtype=object)
