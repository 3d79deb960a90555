"""OGC API Tiles: WebMercatorQuad vector tiles (MVT) of the collections, and TileJSON.

Tiles honour the caller's reach (area, incident scope) and the items parameters (generation,
run, tier, datetime, filter); cached per process until a new generation, incident or run
(seen within ``VERSION_TTL_S``).
"""

from __future__ import annotations

import time
from typing import Any

from anyio import to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.engine import Connection

from api.dependencies import get_connection
from api.policy import PolicyRoute, area_within, scope_of
from api.routers.ogc.common import MVT, collection_for, extent_of, item_query, link, url
from geo.core.errors import NotFound, Problem
from geo.ogc.collections import Collection
from geo.ogc.tiles import (
    MAX_ZOOM,
    TileCache,
    check_tile,
    tile,
    tile_matrix_set,
    tilejson,
    version,
)

router = APIRouter(prefix="/ogc", tags=["ogc"], route_class=PolicyRoute)
VERSION_TTL_S = 1.0
TMS_ID = "WebMercatorQuad"
TMS_URI = "http://www.opengis.net/def/tilematrixset/OGC/1.0/WebMercatorQuad"


def on_startup(app: Any) -> None:
    app.state.tile_cache = TileCache()


def _tiled(request: Request, collection_id: str) -> Collection:
    c = collection_for(request, collection_id)
    if not c.tiles:
        raise NotFound(f"collection '{c.id}' has no tiles", [Problem(
            reason="served as features only", field="collectionId")])
    return c


def _matrix_set(tms: str) -> None:
    if tms != TMS_ID:
        raise NotFound(f"no tile matrix set '{tms}'", [Problem(
            reason=f"only {TMS_ID}", field="tileMatrixSetId")])


def _template(request: Request, c: Collection) -> str:
    query = f"?{request.url.query}" if request.url.query else ""
    return url(request, f"/collections/{c.id}/tiles/{TMS_ID}/{{z}}/{{y}}/{{x}}") + query


@router.get("/tileMatrixSets", operation_id="ogc_tile_matrix_sets",
            summary="Tile matrix sets (WebMercatorQuad)")
def tile_matrix_sets(request: Request) -> dict[str, Any]:
    return {"tileMatrixSets": [{"id": TMS_ID, "title": "Google Maps Compatible for the World",
                                "uri": TMS_URI, "links": [link(url(
                                    request, f"/tileMatrixSets/{TMS_ID}"), "self",
                                    "application/json")]}]}


@router.get("/tileMatrixSets/{tileMatrixSetId}", operation_id="ogc_tile_matrix_set",
            summary="One tile matrix set")
def tile_matrix_set_one(tileMatrixSetId: str) -> dict[str, Any]:
    _matrix_set(tileMatrixSetId)
    return tile_matrix_set()


@router.get("/collections/{collectionId}/tiles", operation_id="ogc_collection_tilesets",
            summary="Vector tilesets of a collection")
def tilesets(collectionId: str, request: Request) -> dict[str, Any]:
    c = _tiled(request, collectionId)
    base = url(request, f"/collections/{c.id}/tiles/{TMS_ID}")
    return {"tilesets": [{
        "title": c.title, "dataType": "vector", "crs": "http://www.opengis.net/def/crs/EPSG/0/3857",
        "tileMatrixSetURI": TMS_URI, "links": [
            link(base, "self", "application/json"),
            link(url(request, f"/tileMatrixSets/{TMS_ID}"),
                 "http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme", "application/json"),
            link(base + "/{tileMatrix}/{tileRow}/{tileCol}", "item", MVT)]}]}


@router.get("/collections/{collectionId}/tiles/{tileMatrixSetId}",
            operation_id="ogc_collection_tileset", summary="A collection's vector tileset")
def tileset(collectionId: str, tileMatrixSetId: str, request: Request) -> dict[str, Any]:
    c = _tiled(request, collectionId)
    _matrix_set(tileMatrixSetId)
    base = url(request, f"/collections/{c.id}/tiles/{TMS_ID}")
    return {
        "title": c.title, "dataType": "vector", "crs": "http://www.opengis.net/def/crs/EPSG/0/3857",
        "tileMatrixSetURI": TMS_URI,
        "layers": [{"id": c.id, "dataType": "vector", "geometryDimension":
                    {"Point": 0, "LineString": 1}.get(c.geometry, 2),
                    "minTileMatrix": str(c.min_zoom), "maxTileMatrix": str(MAX_ZOOM)}],
        "links": [
            link(base, "self", "application/json"),
            link(url(request, f"/collections/{c.id}/tiles/{TMS_ID}/tilejson.json"),
                 "describedby", "application/json", "TileJSON"),
            link(url(request, f"/tileMatrixSets/{TMS_ID}"),
                 "http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme", "application/json"),
            link(base + "/{tileMatrix}/{tileRow}/{tileCol}", "item", MVT)],
    }


@router.get("/collections/{collectionId}/tiles/{tileMatrixSetId}/tilejson.json",
            operation_id="ogc_tilejson", summary="TileJSON 3.0 of a collection's tiles")
def tile_json(collectionId: str, tileMatrixSetId: str, request: Request,
              conn: Connection = Depends(get_connection)) -> dict[str, Any]:
    c = _tiled(request, collectionId)
    _matrix_set(tileMatrixSetId)
    return tilejson(c, _template(request, c), extent_of(request, conn, c))


@router.get("/collections/{collectionId}/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/"
            "{tileCol}", operation_id="ogc_tile", summary="One MVT tile (z/row/col)",
            responses={200: {"content": {MVT: {}}}})
async def get_tile(collectionId: str, tileMatrixSetId: str, tileMatrix: int,
                   tileRow: int, tileCol: int, request: Request) -> Response:
    """A cached tile is answered without the database; a miss is built in a worker thread on a
    pooled connection (queued like every route's, ``connection_slots``)."""
    c = _tiled(request, collectionId)
    _matrix_set(tileMatrixSetId)
    check_tile(tileMatrix, tileCol, tileRow)
    cache: TileCache = request.app.state.tile_cache
    key = (c.id, tileMatrix, tileCol, tileRow, await _version(request),
           area_within(request, None), scope_of(request),
           str(sorted(request.query_params.multi_items())))
    data = cache.get(key)
    if data is None:
        def build() -> bytes:
            with request.app.state.engine.begin() as conn:
                q = item_query(request, conn, c, paged=False)
                return tile(conn, c, q, tileMatrix, tileCol, tileRow)

        async with request.app.state.connection_slots:
            data = await to_thread.run_sync(build)
        cache.put(key, data)
    return Response(data, media_type=MVT, headers={"Cache-Control": "private, max-age=60"})


async def _version(request: Request) -> tuple:
    """The data version tiles depend on (``geo.ogc.tiles.version``), asked at most once every
    ``VERSION_TTL_S`` per process: a new generation or incident shows within that."""
    state = request.app.state
    held = getattr(state, "tile_version", None)
    now = time.monotonic()
    if held is not None and held[0] > now:
        return held[1]

    def ask() -> tuple:
        with state.engine.connect() as conn:
            return version(conn)

    async with state.connection_slots:
        token = await to_thread.run_sync(ask)
    state.tile_version = (now + VERSION_TTL_S, token)
    return token
