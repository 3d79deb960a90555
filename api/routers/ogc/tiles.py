"""OGC API Tiles: WebMercatorQuad vector tiles (MVT) of the collections, and TileJSON.

Tiles honour the caller's reach (area, incident scope) and the items parameters (generation,
run, tier, datetime, filter); cached per process until a new generation, incident, incident
step (``incident_history``) or run, seen within about ``VERSION_TTL_S`` (at once after a write
through this process). Each tile carries an ``ETag`` (a hash of its bytes): ``If-None-Match``
answers 304.

A cached tile is answered by ``TileHits``, a pure ASGI layer in front of the routing: the same
policy (``enforce_policy``), collection and tile checks as the route, then the cache, without
FastAPI's route matching and parameter solving (three quarters of a hit's cost). Anything
else (a miss, a refusal, a stale version) goes on to the route, which answers it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

from anyio import to_thread
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from sqlalchemy.engine import Connection
from starlette.types import ASGIApp, Receive, Scope, Send

from api.dependencies import READ_CONNECTION, read_connection, read_engine, read_slots
from api.policy import PolicyRoute, area_within, enforce_policy, scope_of
from api.read_routing import wrote_recently
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

log = logging.getLogger(__name__)
router = APIRouter(prefix="/ogc", tags=["ogc"], route_class=PolicyRoute)
VERSION_TTL_S = 1.0
TMS_ID = "WebMercatorQuad"
TMS_URI = "http://www.opengis.net/def/tilematrixset/OGC/1.0/WebMercatorQuad"
TILE_PATH = re.compile(r"/ogc/collections/([^/]+)/tiles/WebMercatorQuad/(\d{1,2})/(\d{1,8})/"
                       r"(\d{1,8})")
CACHE_CONTROL = "private, no-cache"  # kept, but asked again each time: a 304 when unchanged
READS = frozenset({"GET", "HEAD", "OPTIONS"})


def on_startup(app: Any) -> None:
    app.state.tile_cache = TileCache()
    app.state.tile_version = None
    app.state.tile_writes = 0


def install(app: FastAPI) -> None:
    """Put ``TileHits`` in front of the routing (inside the request-id and body layers)."""
    app.add_middleware(TileHits)


class TileHits:
    """Pure ASGI: answers a GET of a cached tile before routing; after any write request
    (POST, PUT, PATCH, DELETE) forgets the data version, so this process's tiles follow its
    own changes at once (a new generation, an incident reported or moved a step)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] not in READS:
            try:
                await self.app(scope, receive, send)
            finally:
                state = scope["app"].state
                state.tile_writes = getattr(state, "tile_writes", 0) + 1
                state.tile_version = None
            return
        match = TILE_PATH.fullmatch(scope["path"])
        if match is not None and scope["method"] == "GET":
            response = await _cached(Request(scope, receive), *match.groups())
            if response is not None:
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _cached(request: Request, collection_id: str, z: str, row: str,
                  col: str) -> Response | None:
    """The answer from the cache (200 or 304), or None: the route answers (a miss, a stale
    data version, or anything refused: the route refuses it the same way, mapped to HTTP)."""
    state = request.app.state
    held = getattr(state, "tile_version", None)
    if held is None or wrote_recently(request.scope):  # its own change: the route asks
        return None
    if held[0] <= time.monotonic():
        _refresh(state)  # asked again in the background; meanwhile the held one serves
    try:
        if state.auth_settings.enforce_access:
            await enforce_policy(request, "ogc_tile")
        c = _tiled(request, collection_id)
        check_tile(int(z), int(col), int(row))
    except Exception:  # the route says why, in its error format
        return None
    hit = state.tile_cache.get(_key(request, c, int(z), int(col), int(row), held[1]))
    return None if hit is None else _answer(request, *hit)


def _key(request: Request, c: Collection, z: int, col: int, row: int,
         token: tuple) -> tuple:
    """A tile's cache key: what it shows and to whom (data version, area, scope, query)."""
    return (c.id, z, col, row, token, area_within(request, None), scope_of(request),
            request.scope.get("query_string", b""))  # as sent: parsing it cost a fifth of a hit


def _answer(request: Request, data: bytes, etag: str) -> Response:
    """The tile, or 304 when the client holds it already (``If-None-Match``)."""
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    held = request.headers.get("if-none-match")
    if held is not None and (held.strip() == "*" or etag in {
            tag.strip().removeprefix("W/") for tag in held.split(",")}):
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=MVT, headers=headers)


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
              conn: Connection = READ_CONNECTION) -> dict[str, Any]:
    c = _tiled(request, collectionId)
    _matrix_set(tileMatrixSetId)
    return tilejson(c, _template(request, c), extent_of(request, conn, c))


@router.get("/collections/{collectionId}/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/"
            "{tileCol}", operation_id="ogc_tile", summary="One MVT tile (z/row/col)",
            responses={200: {"content": {MVT: {}}}})
async def get_tile(collectionId: str, tileMatrixSetId: str, tileMatrix: int,
                   tileRow: int, tileCol: int, request: Request) -> Response:
    """A cached tile is answered by ``TileHits`` before routing; a miss is built here in a
    worker thread on a pooled connection (queued like every route's, ``connection_slots``)."""
    c = _tiled(request, collectionId)
    _matrix_set(tileMatrixSetId)
    check_tile(tileMatrix, tileCol, tileRow)
    cache: TileCache = request.app.state.tile_cache
    key = _key(request, c, tileMatrix, tileCol, tileRow, await _version(request))
    hit = cache.get(key)
    if hit is None:
        async with read_connection(request.app.state, request.scope) as conn:
            data = await to_thread.run_sync(_build, request, conn, c, tileMatrix, tileCol,
                                            tileRow)
        hit = cache.put(key, data)
    return _answer(request, *hit)


def _build(request: Request, conn: Connection, c: Collection, z: int, col: int,
           row: int) -> bytes:
    q = item_query(request, conn, c, paged=False)
    return tile(conn, c, q, z, col, row)


async def _version(request: Request) -> tuple:
    """The data version tiles depend on (``geo.ogc.tiles.version``), asked again once it is
    ``VERSION_TTL_S`` old, by one background task while the held one still serves (no burst
    of requests all asking the database at once): another worker's change shows within about
    that. After a write through this process there is none held: it is asked at once."""
    state = request.app.state
    if wrote_recently(request.scope):  # a caller's own change: the primary's version, not held
        return await _ask_version(state, primary=True)
    held = getattr(state, "tile_version", None)
    if held is None:
        return await _ask_version(state)
    if held[0] <= time.monotonic():
        _refresh(state)
    return held[1]


def _refresh(state: Any) -> None:
    """Start asking the data version again, unless that is under way."""
    task = getattr(state, "tile_refresh", None)
    if task is None or task.done():
        task = state.tile_refresh = asyncio.get_running_loop().create_task(_ask_version(state))
        task.add_done_callback(_failed)


def _failed(task: asyncio.Task) -> None:
    """A refresh that failed (the database away) is said in the log; the next tries again."""
    if not task.cancelled() and task.exception() is not None:
        log.warning("tile data version not refreshed: %s", task.exception())


async def _ask_version(state: Any, *, primary: bool = False) -> tuple:
    """Ask the database (the standby if any; ``primary``: the primary) for the data version
    and hold it for ``VERSION_TTL_S``; a version read while a write went through
    (``tile_writes`` moved), or from the primary, is used but not held."""
    writes = getattr(state, "tile_writes", 0)
    now = time.monotonic()
    engine = state.engine if primary else read_engine(state)

    def ask() -> tuple:
        with engine.connect() as conn:
            return version(conn)

    async with state.connection_slots if primary else read_slots(state):
        token = await to_thread.run_sync(ask)
    if not primary and getattr(state, "tile_writes", 0) == writes:
        state.tile_version = (now + VERSION_TTL_S, token)
    return token
