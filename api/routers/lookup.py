"""HTTP routes for point lookup: ``GET /v1/lookup``, ``POST /v1/lookup/batch``, ``GET /v1/ping``.

The hot path never queries the database per point: the in-process index (``geo.lookup``)
answers, and its version is re-read at most every ``LookupSettings.check_interval_ms``. The
index is built (and its version read) from ``app.state.read_engine``: a hot standby when one
is configured, else the primary. The
answer is assembled from pre-serialised JSON fragments (orjson). Lookups are public (no key).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import orjson
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from api.dependencies import read_engine
from api.policy import PolicyRoute
from geo import lookup as lk
from geo.core.errors import InvalidInput, PayloadTooLarge, Problem, WanggeError
from geo.data.coords import normalise_crs

log = logging.getLogger(__name__)
router = APIRouter(tags=["lookup"], route_class=PolicyRoute)
JSON = "application/json"


class TeamMember(BaseModel):
    role: str
    name: str
    phone: str | None = None


class Area(BaseModel):
    type: str
    code: str
    name: str
    parent_code: str | None = None
    responsible_body: str | None = None
    team: list[TeamMember] | None = None


class Point(BaseModel):
    lon: float
    lat: float
    crs: str = "wgs84"


class LookupAnswer(BaseModel):
    """Every area holding the point, MapIt-style; the point echoed in WGS 84."""

    point: Point
    input: dict[str, Any]
    boundary_distance_m: float
    generation: int | None
    areas: list[Area]
    district: Area
    street: Area | None
    community: Area | None
    grid: Area


class BatchEntry(BaseModel):
    """One result, at the position of its point: status 'ok' with codes, or an error."""

    status: str
    grid: str | None = None
    community: str | None = None
    street: str | None = None
    district: str | None = None
    lon: float | None = None
    lat: float | None = None
    error: str | None = None
    field: str | None = None


class BatchAnswer(BaseModel):
    count: int
    generation: int | None
    crs: str
    results: list[BatchEntry]


def on_startup(app: FastAPI) -> None:
    """Read the settings and warm the index so that the first request is not slow."""
    settings = lk.LookupSettings()
    app.state.lookup_settings = settings
    try:
        index = lk.get_index(read_engine(app.state), settings=settings)
        # run the compiled kernels once (numba loads or compiles them on first use: seconds)
        # so that a (re)started worker answers its first lookups at once
        lon, lat = np.array([0.0, 180.0]), np.array([0.0, 90.0])
        index.grid_index(lon, lat)
        index.locate_one(0.0, 0.0)
    except WanggeError as exc:
        log.info("lookup index not built at start-up: %s", exc.message)
    except Exception as exc:  # a missing schema must not stop the app
        log.warning("lookup index not built at start-up: %s", str(exc).splitlines()[0])


def _query(name: str, description: str, *, required: bool = False,
           schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": schema or {"type": "string"}}


LOOKUP_PARAMETERS = [
    _query("lon", "Longitude (degrees) in `crs`.", required=True, schema={"type": "number"}),
    _query("lat", "Latitude (degrees) in `crs`.", required=True, schema={"type": "number"}),
    _query("crs", "wgs84 | gcj02 | bd09 | cgcs2000",
           schema={"type": "string", "default": "wgs84"}),
    _query("at", "YYYY-MM-DD: the boundaries in force that day.",
           schema={"type": "string", "format": "date"}),
]


def _query_args(request: Request) -> dict[str, str]:
    """The query string as ``request.query_params`` reads it (last value of a name wins),
    without its multidict: the usual ``lon=..&lat=..`` needs no unquoting."""
    raw = request.scope.get("query_string", b"").decode("latin-1")
    if "%" in raw or "+" in raw:
        return dict(parse_qsl(raw, keep_blank_values=True))
    return dict(part.partition("=")[::2] for part in raw.split("&") if part)


@router.get(
    "/v1/lookup",
    operation_id="lookup_point",
    summary="The district, street, community and grid (with its team) holding a point",
    responses={200: {"model": LookupAnswer}, 404: {"description": "In no grid / no generation"},
               422: {"description": "Bad input; `problems[].field` names the field"}},
    openapi_extra={"parameters": LOOKUP_PARAMETERS},
)
async def lookup_point(request: Request) -> Response:
    # The hot path reads its query by hand (parameters declared in ``openapi_extra``):
    # FastAPI's per-parameter validation cost more than the lookup itself.
    query = _query_args(request)
    lon, lat, at = query.get("lon"), query.get("lat"), query.get("at")
    crs = query.get("crs", "wgs84")
    if lon is None or lat is None:
        missing = [f for f, v in (("lon", lon), ("lat", lat)) if v is None]
        raise InvalidInput("missing coordinate",
                           [Problem(reason="required", field=f) for f in missing])
    x = lk.parse_coordinate(lon, "lon")
    y = lk.parse_coordinate(lat, "lat")
    state = request.app.state
    settings, engine = state.lookup_settings, read_engine(state)
    wx, wy, name = lk.lookup_coordinates(x, y, crs)
    if at is not None:  # a dated index may need a query or a build: off the event loop
        index = await run_in_threadpool(lk.get_index, engine, at=at, settings=settings)
    else:
        index = lk.get_index(engine, max_staleness_ms=settings.check_interval_ms,
                             background=True, settings=settings)
    g, st = index.locate_one(wx, wy)
    if st != lk.OK:
        raise lk.status_error(st, index, wx, wy, name)
    head = orjson.dumps({"point": {"lon": wx, "lat": wy, "crs": "wgs84"},
                         "input": {"lon": x, "lat": y, "crs": name},
                         "boundary_distance_m": round(index.boundary_distance_m(g, wx, wy), 2)})
    return Response(head[:-1] + b"," + index.fragment(g), media_type=JSON)


@router.get("/v1/ping", operation_id="ping", summary="Empty endpoint (framework ceiling)",
            responses={200: {"description": "An empty JSON object."}})
async def ping() -> Response:
    return Response(b"{}", media_type=JSON)


# -- batch -----------------------------------------------------------------------------------

@router.post(
    "/v1/lookup/batch",
    operation_id="lookup_batch",
    summary="Look many points up: JSON array, GeoJSON FeatureCollection or CSV; input order",
    responses={200: {"model": BatchAnswer}, 413: {"description": "More points than the limit"},
               422: {"description": "Unreadable body or unknown CRS"}},
    openapi_extra={"requestBody": {"content": {
        "application/json": {"schema": {"type": "array", "items": {}}},
        "application/geo+json": {"schema": {"type": "object"}},
        "text/csv": {"schema": {"type": "string"}},
    }, "required": True}},
)
async def lookup_batch(
    request: Request,
    crs: str = Query("wgs84", description="wgs84 | gcj02 | bd09 | cgcs2000"),
    at: str | None = Query(None, description="YYYY-MM-DD: the boundaries in force that day."),
) -> Response:
    settings: lk.LookupSettings = request.app.state.lookup_settings
    name = normalise_crs(crs)
    body = await request.body()
    lon, lat = lk.parse_batch(body, request.headers.get("content-type", "application/json"))
    n = lon.size
    if n > settings.max_batch_points:
        raise PayloadTooLarge(
            f"{n} points; the limit is {settings.max_batch_points}",
            [Problem(reason=f"more than {settings.max_batch_points} points", field="body")])
    # the version check, a rebuild after a grid change (~2 s at 10,000 grids) and the points
    # run in a worker thread: the event loop never waits on the database
    res = await run_in_threadpool(
        lk.locate_batch, read_engine(request.app.state), lon, lat, crs=name, at=at,
        max_staleness_ms=0 if at else settings.check_interval_ms, settings=settings)
    index = res["index"]
    entries = lk.batch_entries(index, res["grid_index"], res["status"])
    head = b"".join((b'{"count":', str(n).encode(), b',"generation":',
                     orjson.dumps(index.generation), b',"crs":"', name.encode(),
                     b'","results":['))
    if n <= settings.stream_threshold:
        return Response(head + b",".join(entries.tolist()) + b"]}", media_type=JSON)

    def chunks(step: int = 50_000) -> Iterator[bytes]:
        yield head
        for s in range(0, n, step):
            part = b",".join(entries[s:s + step].tolist())
            yield part if s == 0 else b"," + part
        yield b"]}"

    return StreamingResponse(chunks(), media_type=JSON)
