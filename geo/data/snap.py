"""Snap areas to their parent's boundary (``wangge import --snap METRES``).

A community digitised separately from its street sticks out of it, or falls short, by slivers
along kilometres of edge. Snapping moves each child's vertex lying within ``metres`` of its
parent's boundary to the nearest point of that boundary, parents first (street to district,
community to the snapped street, grid to the snapped community). Geometry EPSG:4326;
distances in metres (converted at each feature's latitude). What moved is returned.
"""

from __future__ import annotations

from typing import Any

import geopandas as gpd
import shapely

from geo.data.crs import metres_to_degrees

PARENT_OF = (("street", "district"), ("community", "street"), ("grid", "community"))


def _onto(geom: Any, line: Any, tolerance: float) -> Any:
    """``geom`` with each vertex within ``tolerance`` (degrees) of ``line`` moved to the
    nearest point of ``line``."""
    xy = shapely.get_coordinates(geom)
    pts = shapely.points(xy)
    near = shapely.distance(pts, line) <= tolerance
    if not near.any():
        return geom
    # shortest_line works for any boundary (a MultiLineString too): its end is the nearest point
    xy[near] = shapely.get_coordinates(shapely.get_point(shapely.shortest_line(pts[near], line),
                                                         1))
    return shapely.set_coordinates(geom, xy)


def snap_children(layers: dict[str, gpd.GeoDataFrame], metres: float) -> list[dict[str, Any]]:
    """Snap street, community and grid geometry in ``layers`` (EPSG:4326, changed in place) to
    their parent's boundary in the same file within ``metres``. Returns one entry per feature
    that moved: layer, code, parent and ``moved_m`` (largest vertex displacement, metres)."""
    moved: list[dict[str, Any]] = []
    for level, parent_level in PARENT_OF:
        kids, parents = layers.get(level), layers.get(parent_level)
        if kids is None or parents is None or "parent_code" not in kids.columns \
                or "code" not in parents.columns:
            continue
        by_code = dict(zip(parents["code"].astype(str), parents.geometry, strict=True))
        out = []
        for code, parent, geom in zip(kids["code"], kids["parent_code"], kids.geometry,
                                      strict=True):
            ref = by_code.get(str(parent))
            if ref is None or geom is None or geom.is_empty:
                out.append(geom)
                continue
            deg = metres_to_degrees(metres, geom.centroid.y)
            snapped = _onto(geom, ref.boundary, deg)
            if not snapped.is_valid:
                snapped = shapely.make_valid(snapped)
            if not snapped.equals_exact(geom, 0.0):
                moved.append({"layer": level, "code": str(code), "parent": str(parent),
                              "moved_m": round(shapely.hausdorff_distance(geom, snapped)
                                               / deg * metres, 3)})
            out.append(snapped)
        layers[level] = kids.set_geometry(gpd.GeoSeries(out, index=kids.index, crs=kids.crs))
    return moved
