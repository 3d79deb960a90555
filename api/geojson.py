"""Submitted GeoJSON (WGS 84, lon/lat): coordinates in range and a cap on vertices.

``Geometry`` and ``FeatureCollection`` are annotated types for request models. Both refuse
(422, naming the field) coordinates that are not numbers or lie outside lon -180..180 /
lat -90..90 (``1e308`` reached PostGIS and answered 500), and more than ``MAX_VERTICES``
positions in one value; the limit is declared in the OpenAPI schema.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, WithJsonSchema

MAX_VERTICES = 100_000
_TYPES = {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon",
          "GeometryCollection"}


def _positions(coords: Any, out: list[tuple[float, float]], limit: int) -> None:
    """Collect the positions of a nested coordinate array into ``out`` (at most ``limit``)."""
    stack = [coords]
    while stack:
        item = stack.pop()
        if not isinstance(item, list | tuple):
            raise ValueError("coordinates must be nested arrays of [lon, lat]")
        if item and all(isinstance(v, int | float) and not isinstance(v, bool) for v in item):
            if len(item) < 2:
                raise ValueError("a position has fewer than two numbers")
            out.append((float(item[0]), float(item[1])))
            if len(out) > limit:
                raise ValueError(f"more than {limit} vertices")
        else:
            stack.extend(item)


def check_positions(positions: list[tuple[float, float]]) -> None:
    for lon, lat in positions:
        if not (math.isfinite(lon) and math.isfinite(lat)):
            raise ValueError("coordinates must be finite numbers")
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise ValueError(f"position ({lon:g}, {lat:g}) lies outside WGS 84 "
                             "(lon -180..180, lat -90..90)")


def _geometry_positions(geom: Any, out: list[tuple[float, float]]) -> None:
    kind = geom.get("type") if isinstance(geom, dict) else None
    if not isinstance(kind, str) or kind not in _TYPES:
        raise ValueError(f"not a GeoJSON geometry; type one of {', '.join(sorted(_TYPES))}")
    if kind == "GeometryCollection":
        parts = geom.get("geometries")
        if not isinstance(parts, list):
            raise ValueError("a GeometryCollection needs a 'geometries' array")
        for part in parts:
            _geometry_positions(part, out)
        return
    _positions(geom.get("coordinates"), out, MAX_VERTICES)


def check_geometry(geom: dict[str, Any]) -> dict[str, Any]:
    positions: list[tuple[float, float]] = []
    _geometry_positions(geom, positions)
    check_positions(positions)
    return geom


def check_feature_collection(fc: dict[str, Any]) -> dict[str, Any]:
    features = fc.get("features")
    if not isinstance(features, list):
        raise ValueError("not a GeoJSON FeatureCollection (no 'features' array)")
    positions: list[tuple[float, float]] = []
    for f in features:
        geom = f.get("geometry") if isinstance(f, dict) else None
        if geom is not None:
            _geometry_positions(geom, positions)
            if len(positions) > MAX_VERTICES:
                raise ValueError(f"more than {MAX_VERTICES} vertices")
    check_positions(positions)
    return fc


_LIMIT = f"WGS 84 lon/lat; at most {MAX_VERTICES} vertices"
Geometry = Annotated[dict[str, Any], AfterValidator(check_geometry), WithJsonSchema(
    {"type": "object", "description": f"A GeoJSON geometry ({_LIMIT}).",
     "x-max-vertices": MAX_VERTICES, "required": ["type"]})]
FeatureCollection = Annotated[dict[str, Any], AfterValidator(check_feature_collection),
                              WithJsonSchema({"type": "object", "required": ["features"],
                                              "description": f"A GeoJSON FeatureCollection "
                                              f"({_LIMIT} in all).",
                                              "x-max-vertices": MAX_VERTICES})]


def vertex_count(obj: Any) -> int:
    """Positions in a GeoJSON object (a Feature, a FeatureCollection or a geometry) in any CRS:
    the arrays of numbers under ``coordinates`` (properties are not counted). Iterative, so a
    deeply nested body cannot overflow the stack."""
    count, stack = 0, [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item[k] for k in ("geometry", "geometries", "features") if k in item)
            if "coordinates" in item:
                stack.append(_Coordinates(item["coordinates"]))
        elif isinstance(item, _Coordinates):
            inner = item.value
            if isinstance(inner, list | tuple):
                if inner and isinstance(inner[0], int | float) and not isinstance(inner[0], bool):
                    count += 1
                else:
                    stack.extend(_Coordinates(v) for v in inner)
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return count


class _Coordinates:
    """A value found under ``coordinates`` (its arrays are positions, not more objects)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def check_vertex_cap(obj: Any) -> dict[str, Any]:
    """``obj`` if it holds at most ``MAX_VERTICES`` positions; else ValueError (a 422)."""
    if not isinstance(obj, dict):
        raise ValueError("not a GeoJSON object")
    if vertex_count(obj) > MAX_VERTICES:
        raise ValueError(f"more than {MAX_VERTICES} vertices")
    return obj


GeoJSONBody = Annotated[dict[str, Any], AfterValidator(check_vertex_cap), WithJsonSchema(
    {"type": "object", "description": f"A GeoJSON Feature or FeatureCollection, in its "
     f"Content-Crs; at most {MAX_VERTICES} vertices in all.", "x-max-vertices": MAX_VERTICES,
     "required": ["type"]})]
