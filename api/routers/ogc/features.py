"""OGC API Features: landing page, conformance, collections, items, queryables (Parts 1-3),
and create/replace/update/delete on grids as planning changes (Part 4).

GeoJSON in CRS84 unless ``crs`` asks for EPSG:4326, EPSG:4490 (both lat,lon) or the district's
UTM zone; ``Content-Crs`` names it. Pages carry ``numberMatched``, ``numberReturned`` and
next/prev links; a limit above 10,000 is a 400, never a silent cut.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.engine import Connection

from api.dependencies import CONNECTION, READ_CONNECTION
from api.geojson import MAX_VERTICES, GeoJSONBody
from api.policy import PolicyRoute, caller, require_area
from api.routers.ogc.common import (
    GEOJSON,
    OPENAPI_30,
    collection_for,
    extent_of,
    geojson,
    item_query,
    link,
    to_openapi_30,
    url,
    utm_of,
)
from geo import planning
from geo.core.errors import Problem
from geo.ogc import edit
from geo.ogc.collections import COLLECTIONS, Collection
from geo.ogc.crs import CRS84, BadParameter, parse_crs, supported
from geo.ogc.items import MAX_LIMIT, one, page

router = APIRouter(prefix="/ogc", tags=["ogc"], route_class=PolicyRoute)

CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-common-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-common-2/1.0/conf/collections",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables-query-parameters",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
    "http://www.opengis.net/spec/cql2/1.0/conf/advanced-comparison-operators",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions-plus",
    "http://www.opengis.net/spec/cql2/1.0/conf/spatial-functions",
    "http://www.opengis.net/spec/cql2/1.0/conf/arithmetic",
    "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/create-replace-delete",
    "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/update",
    "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/features",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tileset",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tilesets-list",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/geodata-tilesets",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/mvt",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/oas30",
]


@router.get("", operation_id="ogc_landing", summary="OGC API landing page")
def landing(request: Request) -> dict[str, Any]:
    return {
        "title": "wangge 网格 OGC API",
        "description": "网格化社会治理数据：区、街道、社区、网格、楼栋、站点、路网、服务圈、事件。",
        "links": [
            link(url(request, ""), "self", "application/json", "本页"),
            link(url(request, "/api"), "service-desc", OPENAPI_30, "OpenAPI 3.0"),
            link(str(request.base_url).rstrip("/") + "/docs", "service-doc", "text/html"),
            link(url(request, "/conformance"), "conformance", "application/json"),
            link(url(request, "/collections"), "data", "application/json"),
            link(url(request, "/tileMatrixSets"),
                 "http://www.opengis.net/def/rel/ogc/1.0/tiling-schemes", "application/json"),
        ],
    }


@router.get("/conformance", operation_id="ogc_conformance", summary="Conformance classes")
def conformance() -> dict[str, Any]:
    return {"conformsTo": CONFORMANCE}


def _param(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema, "style": "form", "explode": False}


ITEM_PARAMETERS = [
    _param("limit", f"Features per page, 1 to {MAX_LIMIT} (more is a 400).",
           {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 10}),
    _param("offset", "Features to skip (follow the next link).",
           {"type": "integer", "minimum": 0, "default": 0}),
    _param("bbox", "minx,miny,maxx,maxy in bbox-crs (default CRS84).",
           {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 6}),
    _param("bbox-crs", "CRS of bbox (URI).", {"type": "string", "format": "uri"}),
    _param("crs", "CRS of the answer (URI).", {"type": "string", "format": "uri"}),
    _param("datetime", "Instant or interval (RFC 3339); areas: the generation at an instant.",
           {"type": "string"}),
    _param("filter", "CQL2 filter on the queryables.", {"type": "string"}),
    _param("filter-lang", "cql2-text (default) or cql2-json (cql-text: the draft's name).",
           {"type": "string", "enum": ["cql2-text", "cql2-json", "cql-text"],
            "default": "cql2-text"}),
    _param("filter-crs", "CRS of geometries in the filter (URI).",
           {"type": "string", "format": "uri"}),
    _param("generation", "Areas: the boundary generation to read (default current).",
           {"type": "integer", "minimum": 1}),
    _param("run", "Circles and coverage: the analysis run (default newest).",
           {"type": "integer", "minimum": 1}),
    _param("tier", "Circles: one tier (metres).", {"type": "number"}),
]


@router.get("/api", operation_id="ogc_openapi", summary="The OpenAPI 3.0 description")
def openapi(request: Request) -> Response:
    """The OGC paths of the app's OpenAPI, as 3.0, relative to the ``/ogc`` server, with the
    items parameters and one items path per collection naming its queryables (GDAL reads
    them there)."""
    full = to_openapi_30(request.app.openapi())
    paths = {p[len("/ogc"):] or "/": v for p, v in full["paths"].items()
             if p == "/ogc" or p.startswith("/ogc/")}
    generic = paths["/collections/{collectionId}/items"]["get"]
    generic["parameters"] = [*generic.get("parameters", []), *ITEM_PARAMETERS]
    for c in COLLECTIONS.values():
        params = [_param(name, f"{name} equals this value", {"type": "string"} if kind in (
            "string", "date-time") else {"type": kind}) for name, kind in c.properties.items()]
        paths[f"/collections/{c.id}/items"] = {"get": {
            "operationId": f"ogc_items_{c.id}", "summary": f"Features of {c.id}",
            "tags": ["ogc"], "parameters": [*ITEM_PARAMETERS, *params],
            "responses": {"200": {"description": "A page of features",
                                  "content": {GEOJSON: {"schema": {"type": "object"}}}}}}}
    doc = {"openapi": "3.0.3", "info": {**full["info"], "title": "wangge 网格 OGC API"},
           "servers": [{"url": url(request, "")}], "paths": paths,
           "components": full.get("components", {})}
    return Response(json.dumps(doc, ensure_ascii=False), media_type=OPENAPI_30)


def _collection(request: Request, c: Collection, utm: int,
                bbox: list[float] | None) -> dict[str, Any]:
    base = url(request, f"/collections/{c.id}")
    links = [link(base, "self", "application/json", c.title),
             link(base + "/items", "items", GEOJSON, c.title),
             link(base + "/queryables", "http://www.opengis.net/def/rel/ogc/1.0/queryables",
                  "application/schema+json")]
    if c.tiles:
        links.append(link(base + "/tiles", "http://www.opengis.net/def/rel/ogc/1.0/vector-tiles",
                          "application/json"))
    out = {"id": c.id, "title": c.title, "description": c.description, "itemType": "feature",
           "crs": [x.uri for x in supported(utm)], "storageCrs": CRS84, "links": links}
    if bbox:
        out["extent"] = {"spatial": {"bbox": [bbox], "crs": CRS84}}
    return out


@router.get("/collections", operation_id="ogc_collections", summary="The collections")
def collections(request: Request, conn: Connection = READ_CONNECTION) -> dict[str, Any]:
    utm = utm_of(request, conn)
    return {"links": [link(url(request, "/collections"), "self", "application/json")],
            "collections": [_collection(request, c, utm, extent_of(request, conn, c))
                            for c in COLLECTIONS.values()]}


@router.get("/collections/{collectionId}", operation_id="ogc_collection",
            summary="One collection")
def collection(collectionId: str, request: Request,
               conn: Connection = READ_CONNECTION) -> dict[str, Any]:
    c = collection_for(request, collectionId)
    return _collection(request, c, utm_of(request, conn), extent_of(request, conn, c))


@router.get("/collections/{collectionId}/queryables", operation_id="ogc_queryables",
            summary="Queryables of a collection (JSON Schema)")
def queryables(collectionId: str, request: Request) -> JSONResponse:
    c = collection_for(request, collectionId)
    props: dict[str, Any] = {"geometry": {
        "$ref": "https://geojson.org/schema/" + ("Geometry" if c.geometry == "Geometry"
                                                 else c.geometry) + ".json"}}
    for name, kind in c.properties.items():
        props[name] = ({"type": "string", "format": "date-time"} if kind == "date-time"
                       else {"type": kind})
        props[name]["title"] = name
    return JSONResponse({
        "$schema": "https://json-schema.org/draft/2019-09/schema",
        "$id": url(request, f"/collections/{c.id}/queryables"), "type": "object",
        "title": c.title, "properties": props, "additionalProperties": False,
        # the draft's list, which GDAL 3.6 reads to know what it may filter on server side
        "queryables": [{"id": name, "type": kind} for name, kind in c.properties.items()],
    }, media_type="application/schema+json")


@router.get("/collections/{collectionId}/items", operation_id="ogc_items",
            summary="Features of a collection: bbox, datetime, filter (CQL2), crs, paging")
def items(collectionId: str, request: Request,
          conn: Connection = READ_CONNECTION) -> Response:
    c = collection_for(request, collectionId)
    q = item_query(request, conn, c)
    if q.limit > MAX_LIMIT or q.limit < 1:
        raise BadParameter("limit out of range", [Problem(
            reason=f"must be between 1 and {MAX_LIMIT}", field="limit")])
    features, matched = page(conn, c, q)
    here = request.url
    links = [link(str(here), "self", GEOJSON)]
    if q.offset + len(features) < matched:
        links.append(link(str(here.include_query_params(offset=q.offset + q.limit,
                                                        limit=q.limit)), "next", GEOJSON))
    if q.offset > 0:
        links.append(link(str(here.include_query_params(offset=max(0, q.offset - q.limit),
                                                        limit=q.limit)), "prev", GEOJSON))
    links.append(link(url(request, f"/collections/{c.id}"), "collection", "application/json"))
    head = json.dumps({"type": "FeatureCollection", "numberMatched": matched,
                       "numberReturned": len(features), "links": links}, ensure_ascii=False)
    body = head[:-1] + ', "features": [' + ",".join(features) + "]}"
    return geojson(body, q.crs)


@router.get("/collections/{collectionId}/items/{featureId}", operation_id="ogc_item",
            summary="One feature")
def item(collectionId: str, featureId: str, request: Request,
         conn: Connection = READ_CONNECTION) -> Response:
    c = collection_for(request, collectionId)
    q = item_query(request, conn, c, paged=False)
    feature = json.loads(one(conn, c, q, featureId))
    feature["links"] = [
        link(str(request.url), "self", GEOJSON),
        link(url(request, f"/collections/{c.id}"), "collection", "application/json")]
    return geojson(json.dumps(feature, ensure_ascii=False), q.crs)


# ------------------------------------------------------------------ Part 4: grids only


def _editable(request: Request, collection_id: str) -> None:
    c = collection_for(request, collection_id)
    if not c.editable:
        raise BadParameter(f"collection '{c.id}' is read-only", [Problem(
            reason="only the grids collection takes changes", field="collectionId")])


def _content_crs(request: Request, conn: Connection) -> tuple[int, bool]:
    raw = request.headers.get("content-crs") or request.query_params.get("crs")
    crs = parse_crs(raw.strip("<>") if raw else None, utm_of(request, conn),
                    field="Content-Crs")
    return crs.srid, crs.latlon


def _author(request: Request) -> str | None:
    p = caller(request)
    return p.name if p is not None else None


def _settings(request: Request) -> planning.PlanningSettings:
    return getattr(request.app.state, "planning_settings", None) or planning.PlanningSettings()


def _changed(request: Request, res: planning.ChangeResult, status: int,
             location: str | None = None) -> Response:
    planning.refresh_lookup()
    headers = {"X-Generation": str(res.generation)}
    if location:
        headers["Location"] = location
    if status == 204:
        return Response(status_code=204, headers=headers)
    return JSONResponse(res.as_dict(), status_code=status, headers=headers)


FEATURE = Body(..., media_type=GEOJSON, description="A GeoJSON Feature (Content-Crs: its CRS).",
               json_schema_extra={"x-max-vertices": MAX_VERTICES})


@router.post("/collections/{collectionId}/items", operation_id="ogc_create_item",
             status_code=201, summary="Create a grid, or (a FeatureCollection, with `community`)"
             " import a new grid layer: a planning change with its checks",
             responses={422: {"description": "Refused by the planning checks; nothing written"}})
def create_item(collectionId: str, request: Request,
                feature: GeoJSONBody = FEATURE,
                conn: Connection = CONNECTION) -> Response:
    _editable(request, collectionId)
    srid, latlon = _content_crs(request, conn)
    if feature.get("type") == "FeatureCollection":  # a new grid layer
        community = request.query_params.get("community")
        require_area(request, community, field="community")
        res = edit.import_layer(conn, feature, community=community, srid=srid, latlon=latlon,
                                author=_author(request), settings=_settings(request))
        return _changed(request, res, 201, url(request, "/collections/grids/items"))
    parent = (feature.get("properties") or {}).get("parent_code")
    require_area(request, parent if isinstance(parent, str) else None, field="parent_code")
    res = edit.create_grid(conn, feature, srid=srid, latlon=latlon, author=_author(request),
                           settings=_settings(request))
    code = next((c for c in res.created), None)
    where = url(request, f"/collections/grids/items/{code}") if code else None
    return _changed(request, res, 201, where)


@router.put("/collections/{collectionId}/items/{featureId}", operation_id="ogc_replace_item",
            status_code=204, summary="Replace a grid's geometry (a planning reshape)",
            responses={422: {"description": "Refused by the planning checks; nothing written"}})
def replace_item(collectionId: str, featureId: str, request: Request,
                 feature: GeoJSONBody = FEATURE,
                 conn: Connection = CONNECTION) -> Response:
    _editable(request, collectionId)
    require_area(request, featureId, field="featureId")
    srid, latlon = _content_crs(request, conn)
    res = edit.replace_grid(conn, featureId, feature, srid=srid, latlon=latlon,
                            author=_author(request), settings=_settings(request))
    return _changed(request, res, 204)


@router.patch("/collections/{collectionId}/items/{featureId}", operation_id="ogc_update_item",
              status_code=204, summary="Update a grid's geometry (a planning reshape)",
              responses={422: {"description": "Refused by the planning checks"}})
def update_item(collectionId: str, featureId: str, request: Request,
                feature: GeoJSONBody = Body(..., media_type="application/merge-patch+json",
                                            json_schema_extra={"x-max-vertices": MAX_VERTICES}),
                conn: Connection = CONNECTION) -> Response:
    _editable(request, collectionId)
    require_area(request, featureId, field="featureId")
    srid, latlon = _content_crs(request, conn)
    res = edit.replace_grid(conn, featureId, {"type": "Feature", **feature}, srid=srid,
                            latlon=latlon, author=_author(request), settings=_settings(request),
                            patch=True)
    return _changed(request, res, 204)


@router.delete("/collections/{collectionId}/items/{featureId}", operation_id="ogc_delete_item",
               status_code=204, summary="Retire a grid (refused if it leaves a gap)",
               responses={422: {"description": "Refused by the planning checks"}})
def delete_item(collectionId: str, featureId: str, request: Request,
                conn: Connection = CONNECTION) -> Response:
    _editable(request, collectionId)
    require_area(request, featureId, field="featureId")
    res = edit.delete_grid(conn, featureId, author=_author(request),
                           settings=_settings(request))
    return _changed(request, res, 204)
