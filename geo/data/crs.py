"""Coordinate reference systems: resolving a layer's CRS, reprojecting to WGS 84, and choosing
a metric (UTM) CRS for measuring in metres.

GCJ-02 / BD-09 offsets are not CRSs that pyproj knows; they live in ``geo.data.coords``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import geopandas as gpd
import shapely
from pyproj import CRS
from pyproj.exceptions import CRSError
from shapely.geometry.base import BaseGeometry
from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.core.errors import NotFound, Problem, UnknownCRS

WGS84 = 4326


def resolve_crs(layer: str, crs: object) -> CRS:
    """The pyproj CRS of ``layer``; raise ``UnknownCRS`` naming the layer if missing or unknown."""
    if crs is None or (isinstance(crs, str) and not crs.strip()):
        raise UnknownCRS(
            f"layer '{layer}' has no CRS",
            [Problem(reason="the file declares no coordinate reference system; "
                     "add a .prj / crs member or reproject it", field="crs", feature=layer)],
        )
    try:
        resolved = CRS.from_user_input(crs)
    except (CRSError, TypeError, ValueError) as exc:
        raise UnknownCRS(
            f"layer '{layer}' has a CRS pyproj does not know",
            [Problem(reason=f"unknown CRS {str(crs)[:80]!r}: {exc}", field="crs", feature=layer)],
        ) from exc
    if resolved.is_engineering or not (resolved.is_geographic or resolved.is_projected):
        raise UnknownCRS(
            f"layer '{layer}' has a CRS that cannot be placed on the earth",
            [Problem(reason=f"CRS {resolved.name!r} is neither geographic nor projected",
                     field="crs", feature=layer)],
        )
    return resolved


def to_wgs84(layer: str, gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """``gdf`` reprojected to EPSG:4326 (lon, lat). Layers without geometry are returned as is."""
    if not isinstance(gdf, gpd.GeoDataFrame) or gdf.geometry.name not in gdf.columns:
        return gdf
    crs = resolve_crs(layer, gdf.crs)
    if crs.equals(CRS.from_epsg(WGS84), ignore_axis_order=True):
        return gdf.set_crs(WGS84, allow_override=True)
    return gdf.to_crs(WGS84)


def utm_epsg(lon: float, lat: float) -> int:
    """The WGS 84 / UTM zone EPSG code containing (lon, lat) in degrees."""
    zone = int((lon + 180.0) // 6.0) % 60 + 1
    return (32600 if lat >= 0 else 32700) + zone


def metres_to_degrees(metres: float, lat: float) -> float:
    """Metres as degrees of longitude at latitude ``lat`` (the larger of the two degree sizes,
    so a box of this half-width in degrees holds the metric circle); cos(lat) floored at 0.2."""
    return metres / (111_320.0 * max(math.cos(math.radians(lat)), 0.2))


def polygonal(geom: Any) -> Any:
    """The polygonal part of a geometry (a ``make_valid`` bowtie becomes a MultiPolygon);
    the geometry itself when already polygonal or None, None when it has no polygonal part."""
    if geom is None or geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [p for p in shapely.get_parts(geom) if p.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(parts) if parts else None


def metric_crs_for(geometry_or_bounds: BaseGeometry | Sequence[float] | gpd.GeoSeries) -> int:
    """UTM EPSG code at the centre of a WGS 84 geometry, GeoSeries or (minx, miny, maxx, maxy)."""
    if isinstance(geometry_or_bounds, BaseGeometry):
        bounds = geometry_or_bounds.bounds
    elif isinstance(geometry_or_bounds, (gpd.GeoSeries, gpd.GeoDataFrame)):
        bounds = tuple(geometry_or_bounds.total_bounds)
    else:
        bounds = tuple(geometry_or_bounds)
    minx, miny, maxx, maxy = (float(v) for v in bounds)
    return utm_epsg((minx + maxx) / 2.0, (miny + maxy) / 2.0)


def district_metric_srid(conn: Connection, district_code: str | None = None) -> int:
    """The metric SRID (EPSG code of a UTM zone) stored with the current district
    ``district_code``, or with the first current district by code when None is given.

    Raises ``NotFound`` when there is no such district or it stores no SRID.
    """
    srid = conn.execute(
        text(
            "SELECT metric_srid FROM area_current WHERE level = 'district'"
            " AND (CAST(:d AS text) IS NULL OR code = :d) ORDER BY code LIMIT 1"
        ),
        {"d": district_code},
    ).scalar()
    if srid is None:
        where = f"district {district_code}" if district_code else "a current district"
        raise NotFound(f"no metric SRID for {where}: load a district first")
    return int(srid)
