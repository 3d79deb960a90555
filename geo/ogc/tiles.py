"""Vector tiles (OGC API Tiles, WebMercatorQuad, Mapbox Vector Tiles) built by ``ST_AsMVT``.

The tile matrix set is morecantile's WebMercatorQuad; the tile itself is PostGIS's
(``ST_TileEnvelope``, ``ST_AsMVTGeom``, ``ST_AsMVT``). Polygons and lines are simplified to
a quarter of a tile unit at each zoom before clipping, and below z13 tiles use 512 units instead
of 4096 and carry only each feature's identifier (code or id), so a whole city of grids stays
light at low zooms. Tiles are cached in process memory with their ETag (a hash of the bytes)
under a version token (newest generation, incident, incident step and analysis run): a new
generation, a new incident or an incident's step (a status change is a row of the append-only
``incident_history``) makes every older tile unreachable.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

import morecantile
from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.core.errors import NotFound, Problem
from geo.ogc.collections import Collection
from geo.ogc.items import ItemQuery, source_sql, where_clause

TMS = morecantile.tms.get("WebMercatorQuad")
EXTENT = 4096
# Below this zoom a whole city's grids share a few tiles: a coarser grid of 512 units keeps
# them light (a grid smaller than a unit is dropped: it would be under a pixel anyway)
FULL_EXTENT_ZOOM = 13
LOW_EXTENT = 512
BUFFER = 64
MAX_ZOOM = 22
WORLD_M = 2 * 20037508.342789244


def check_tile(z: int, x: int, y: int) -> None:
    """404 for a tile outside WebMercatorQuad's matrices (OGC API Tiles: a missing tile)."""
    if not 0 <= z <= MAX_ZOOM:
        raise NotFound("no such tile matrix", [Problem(reason=f"zoom 0..{MAX_ZOOM}",
                                                       field="tileMatrix")])
    matrix = TMS.matrix(z)
    if not (0 <= x < matrix.matrixWidth and 0 <= y < matrix.matrixHeight):
        raise NotFound("tile outside the matrix", [Problem(
            reason=f"row and col in 0..{matrix.matrixWidth - 1}", field="tileRow")])


def version(conn: Connection) -> tuple[Any, ...]:
    """What a cached tile depends on: newest generation, incident, incident step (every change
    of a case appends to ``incident_history``) and analysis run ids."""
    return tuple(conn.execute(text(
        "SELECT (SELECT max(id) FROM generation), (SELECT max(id) FROM incident), "
        "(SELECT max(id) FROM incident_history), (SELECT max(id) FROM analysis_run)")).one())


def tile(conn: Connection, c: Collection, q: ItemQuery, z: int, x: int, y: int) -> bytes:
    """The MVT tile (z, x=col, y=row) of collection ``c`` for query ``q`` (scope, filter...)."""
    check_tile(z, x, y)
    if z < c.min_zoom:  # too many small features to draw: the layer starts at min_zoom
        return b""
    extent = EXTENT if z >= FULL_EXTENT_ZOOM else LOW_EXTENT
    params: dict[str, Any] = {"z": z, "x": x, "y": y, "ext": extent,
                              "buf": BUFFER * extent // EXTENT, "layer": c.id,
                              "margin": BUFFER / EXTENT}
    src = source_sql(c, q.scope, params)
    where = where_clause(conn, c, q, params)
    names = list(c.properties) if z >= FULL_EXTENT_ZOOM else list(c.properties)[:1]
    props = ", ".join(f"t.{name}" for name in names)  # low zooms: the identifier only
    if c.geometry == "Point":
        geom = "ST_Transform(t.geom, 3857)"
    else:
        params["tol"] = WORLD_M / (1 << z) / extent / 4
        geom = "ST_SimplifyPreserveTopology(ST_Transform(t.geom, 3857), :tol)"
    sql = f"""
        WITH e AS (SELECT ST_TileEnvelope(:z, :x, :y) AS box,
                          ST_Transform(ST_TileEnvelope(:z, :x, :y, margin => :margin), 4326)
                          AS box4326)
        SELECT ST_AsMVT(m, :layer, :ext, 'geom', 'fid') FROM (
            SELECT t.fid, {props}, ST_AsMVTGeom({geom}, e.box, :ext, :buf, true) AS geom
            FROM {src} t, e
            WHERE t.geom && e.box4326 AND {where}
        ) m WHERE m.geom IS NOT NULL
    """
    if c.id_type != "integer":  # MVT feature ids are integers: string ids stay a property
        sql = sql.replace(", 'geom', 'fid')", ", 'geom')")
    data = conn.execute(text(sql), params).scalar()
    return bytes(data or b"")


def etag_of(data: bytes) -> str:
    """A strong HTTP ETag of a tile's bytes (BLAKE2b, 96 bits)."""
    return '"' + hashlib.blake2b(data, digest_size=12).hexdigest() + '"'


class TileCache:
    """A byte-bounded LRU of tiles and their ETags; keys carry the version token, so stale
    tiles age out."""

    def __init__(self, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._tiles: OrderedDict[tuple[Any, ...], tuple[bytes, str]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[Any, ...]) -> tuple[bytes, str] | None:
        """(tile, ETag) under ``key``, or None."""
        with self._lock:
            data = self._tiles.get(key)
            if data is None:
                self.misses += 1
                return None
            self._tiles.move_to_end(key)
            self.hits += 1
            return data

    def put(self, key: tuple[Any, ...], data: bytes) -> tuple[bytes, str]:
        """Keep ``data`` under ``key``; (tile, ETag) as kept."""
        entry = (data, etag_of(data))
        with self._lock:
            if key in self._tiles:
                return self._tiles[key]
            self._tiles[key] = entry
            self._bytes += len(data) + 200
            while self._bytes > self.max_bytes and self._tiles:
                _, (old, _tag) = self._tiles.popitem(last=False)
                self._bytes -= len(old) + 200
        return entry


def tilejson(c: Collection, tiles_url: str, bounds: list[float] | None) -> dict[str, Any]:
    """TileJSON 3.0.0 for one collection's MVT tiles."""
    return {
        "tilejson": "3.0.0", "name": c.id, "description": c.description,
        "tiles": [tiles_url], "scheme": "xyz", "minzoom": 0, "maxzoom": MAX_ZOOM,
        "bounds": bounds or [-180.0, -85.05112878, 180.0, 85.05112878],
        "vector_layers": [{"id": c.id, "fields": {
            k: {"integer": "Number", "number": "Number", "boolean": "Boolean"}.get(v, "String")
            for k, v in c.properties.items()}, "minzoom": c.min_zoom, "maxzoom": MAX_ZOOM}],
    }


def tile_matrix_set() -> dict[str, Any]:
    """The WebMercatorQuad definition (OGC 2D Tile Matrix Set 2.0 JSON), from morecantile."""
    return TMS.model_dump(mode="json", exclude_none=True, by_alias=True)
