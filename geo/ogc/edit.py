"""OGC API Features Part 4 on grids: each create, replace, update or delete is a planning change.

- POST a grid (Feature, geometry in the content CRS, ``parent_code`` its community): a new grid;
  the sibling grids it overlaps give up that ground (a reshape of them in the same change).
  Its ``name``, ``responsible_body`` and ``team`` (member ids of those siblings' 2+5+N teams)
  are checked as a planning change's ``grids`` choices are.
- PUT / PATCH a grid's geometry: the grid is redrawn; siblings it now overlaps give up that
  ground. Name and responsible body are kept (a PATCH of other properties is refused).
- POST a FeatureCollection: a new grid layer (of ``community``, or the district) replacing the
  current grids in scope, as ``geo.planning.import_grid_layer`` does for a file.
- DELETE a grid: it is retired; its ground must then be covered by siblings, so on its own the
  checks refuse it (a gap), which answers 422 with the problems and writes nothing.

All go through ``geo.planning.apply_change``, the one writer behind split, merge, reshape and
import, with the same checks; the new generation records its author.
"""

from __future__ import annotations

from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from pyproj import Transformer
from shapely.geometry import shape
from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo import planning
from geo.core.errors import InvalidInput, NotFound, Problem
from geo.data.crs import polygonal
from geo.planning.choices import clean_team, clean_text


def _geometry(feature: dict[str, Any], srid: int, latlon: bool) -> Any:
    """The feature's polygon in EPSG:4326 (lon, lat), from ``srid`` (axes lat,lon if set)."""
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise InvalidInput("a GeoJSON Feature is expected", [Problem(
            reason="body must be a GeoJSON Feature", field="type")])
    try:
        geom = shape(feature.get("geometry") or {})
    except Exception as exc:  # shapely's many errors on bad GeoJSON
        raise InvalidInput("bad geometry", [Problem(reason=str(exc)[:200],
                                                    field="geometry")]) from exc
    if geom.geom_type not in ("Polygon", "MultiPolygon") or geom.is_empty:
        raise InvalidInput("a grid is a polygon", [Problem(
            reason=f"got {geom.geom_type}", field="geometry")])
    if latlon:
        geom = shapely.transform(geom, lambda xy: xy[:, ::-1])
    if srid != 4326:
        tr = Transformer.from_crs(srid, 4326, always_xy=True)
        geom = shapely.transform(
            geom, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    return geom


def _siblings_trimmed(conn: Connection, community: str, geom: Any,
                      skip: str | None) -> dict[str, Any]:
    """{code: geometry minus ``geom``} of the current grids of ``community`` it overlaps."""
    rows = conn.execute(text(
        "SELECT code, ST_AsBinary(geom) FROM area_current WHERE level = 'grid' "
        "AND parent_code = :c AND code <> coalesce(CAST(:skip AS text), '') "
        "AND ST_Intersects(geom, ST_GeomFromWKB(:g, 4326))"),
        {"c": community, "skip": skip, "g": geom.wkb}).all()
    out = {}
    for code, wkb in rows:
        old = shapely.from_wkb(bytes(wkb))
        rest = polygonal(old.difference(geom))
        if rest is None or rest.is_empty:
            continue  # swallowed whole: the checks will say what that breaks
        if not shapely.equals_exact(rest, old, 1e-12):
            out[code] = rest
    return out


def _author(conn: Connection, generation: int, author: str | None) -> None:
    conn.execute(text("UPDATE generation SET author = :a WHERE id = :g"),
                 {"a": author, "g": generation})


def _current(conn: Connection, code: str) -> str:
    parent = conn.execute(text("SELECT parent_code FROM area_current WHERE level = 'grid' "
                               "AND code = :c"), {"c": code}).scalar()
    if parent is None:
        raise NotFound(f"no current grid {code}", [Problem(
            reason="no such current grid", field="featureId", feature=code)])
    return str(parent)


def chosen_properties(props: dict[str, Any]) -> dict[str, Any]:
    """A POSTed grid's ``name``, ``responsible_body`` and ``team`` (member ids of the trimmed
    siblings' teams), checked as a change's ``grids`` choices are (``geo.planning.choices``):
    422 on bad text or ids, and a chosen name must be unique in the community (409)."""
    out: dict[str, Any] = {}
    for key in ("name", "responsible_body"):
        if props.get(key) is not None:
            out[key] = clean_text(props[key], key)
            out["chosen"] = True
    if props.get("team") is not None:
        out["team"] = clean_team(props["team"], "team")
    return out


def create_grid(conn: Connection, feature: dict[str, Any], *, srid: int, latlon: bool,
                author: str | None, settings: planning.PlanningSettings) -> planning.ChangeResult:
    """POST: a new grid in community ``properties.parent_code``; overlapped siblings shrink."""
    geom = _geometry(feature, srid, latlon)
    props = feature.get("properties") or {}
    community = props.get("parent_code")
    if not isinstance(community, str) or len(community) != 12 or not community.isdigit():
        raise InvalidInput("the community of the new grid is needed", [Problem(
            reason="properties.parent_code must be a 12-digit community code",
            field="parent_code")])
    replace = _siblings_trimmed(conn, community, geom, None)
    item = {"parent_code": community, "geometry": geom, **chosen_properties(props)}
    res = planning.apply_change(conn, "create", replace=replace, create=[item],
                                params={"community": community, "trimmed": sorted(replace)},
                                settings=settings, note="OGC API Features: create")
    _author(conn, res.generation, author)
    return res


def import_layer(conn: Connection, collection: dict[str, Any], *, community: str | None,
                 srid: int, latlon: bool, author: str | None,
                 settings: planning.PlanningSettings) -> planning.ChangeResult:
    """POST of a FeatureCollection: a new grid layer for ``community`` (or the district),
    through ``geo.planning.import_grid_layer``: its grids replace the current ones in scope."""
    feats = collection.get("features")
    if not isinstance(feats, list) or not feats:
        raise InvalidInput("an empty layer", [Problem(reason="features must be a non-empty list",
                                                      field="features")])
    geoms, props = [], []
    for i, f in enumerate(feats):
        try:
            geoms.append(_geometry(f, srid, latlon))
        except InvalidInput as exc:
            raise InvalidInput(f"feature {i}: {exc.message}", [
                Problem(reason=p.reason, field=p.field, feature=i) for p in exc.problems]) \
                from exc
        props.append({k: (f.get("properties") or {}).get(k)
                      for k in ("code", "parent_code", "name", "responsible_body")})
    gdf = gpd.GeoDataFrame(props, geometry=geoms, crs=4326)
    res = planning.import_grid_layer(conn, gdf, community=community, settings=settings)
    _author(conn, res.generation, author)
    return res


def replace_grid(conn: Connection, code: str, feature: dict[str, Any], *, srid: int,
                 latlon: bool, author: str | None, settings: planning.PlanningSettings,
                 patch: bool = False) -> planning.ChangeResult:
    """PUT/PATCH: redraw grid ``code``; siblings it now overlaps give up the ground."""
    community = _current(conn, code)
    props = (feature.get("properties") or {}) if isinstance(feature, dict) else {}
    if patch and isinstance(feature, dict) and feature.get("geometry") is None:
        raise InvalidInput("only the geometry of a grid is edited here", [Problem(
            reason="PATCH needs a geometry; names change through the grid layer import",
            field="geometry")])
    fixed = {k for k in props if k not in ("code", "parent_code", "name", "responsible_body",
                                           "generation")}
    if fixed:
        raise InvalidInput("unknown properties", [Problem(
            reason="not a grid property", field=k) for k in sorted(fixed)])
    if props.get("parent_code") not in (None, community) or \
            props.get("code") not in (None, code):
        raise InvalidInput("a grid keeps its code and community", [Problem(
            reason="code and parent_code cannot change", field="parent_code")])
    geom = _geometry(feature, srid, latlon)
    replace = _siblings_trimmed(conn, community, geom, code)
    replace[code] = geom
    res = planning.apply_change(conn, "reshape", replace=replace,
                                params={"codes": sorted(replace), "via": "ogc"},
                                settings=settings, note="OGC API Features: replace")
    _author(conn, res.generation, author)
    return res


def delete_grid(conn: Connection, code: str, *, author: str | None,
                settings: planning.PlanningSettings) -> planning.ChangeResult:
    """DELETE: retire grid ``code`` (refused by the checks unless its ground stays covered)."""
    _current(conn, code)
    res = planning.apply_change(conn, "retire", retire=[code], params={"code": code},
                                settings=settings, note="OGC API Features: delete")
    _author(conn, res.generation, author)
    return res
