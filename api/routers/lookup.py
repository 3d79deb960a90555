"""HTTP routes for point lookup: ``GET /v1/lookup``, ``POST /v1/lookup/batch``, ``GET /v1/ping``.

The hot path never queries the database per point: the in-process index (geo/lookup.py)
answers, and its version is re-read at most every ``LookupSettings.check_interval_ms``. The
answer is assembled from pre-serialised JSON fragments (orjson). Lookups are public (no key).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import orjson
import pandas as pd
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from api.policy import PolicyRoute
from geo.core.errors import InvalidInput, PayloadTooLarge, Problem, WanggeError
from geo.data.coords import normalise_crs
from geo.lookup import service as lk

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
        lk.get_index(app.state.engine, settings=settings)
    except WanggeError as exc:
        log.info("lookup index not built at start-up: %s", exc.message)
    except Exception as exc:  # noqa: BLE001 - a missing schema must not stop the app
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
    settings, engine = state.lookup_settings, state.engine
    wx, wy, name = lk.to_wgs84_checked(x, y, crs)
    if at is not None:
        index = lk.get_index(engine, at=at, settings=settings)
    else:
        index = lk.get_index(engine, max_staleness_ms=settings.check_interval_ms,
                             background=True, settings=settings)
    if name not in ("wgs84", "cgcs2000") and (abs(x) > 180 or abs(y) > 90):
        sx, sy, _ = lk.to_wgs84_checked(y, x, name)
        wx, wy = sy, sx  # swapped back: classify() then reports the swap
    g, st = index.locate_one(wx, wy)
    if st != lk.OK:
        raise lk._status_error(st, index, wx, wy, name)
    head = orjson.dumps({"point": {"lon": wx, "lat": wy, "crs": "wgs84"},
                         "input": {"lon": x, "lat": y, "crs": name},
                         "boundary_distance_m": round(index.boundary_distance_m(g, wx, wy), 2)})
    return Response(head[:-1] + b"," + index.fragment(g), media_type=JSON)


@router.get("/v1/ping", operation_id="ping", summary="Empty endpoint (framework ceiling)",
            responses={200: {"description": "An empty JSON object."}})
async def ping() -> Response:
    return Response(b"{}", media_type=JSON)


# -- batch -----------------------------------------------------------------------------------

def _floats(values: list[Any]) -> np.ndarray:
    """Numbers → float64; anything else → NaN (reported per point as not a number)."""
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(
            dtype=np.float64)


def _parse_batch(body: bytes, content_type: str) -> tuple[np.ndarray, np.ndarray]:
    """(lon, lat) arrays from a JSON array ({lon,lat} or [lon,lat]), a GeoJSON
    FeatureCollection of points, or CSV with lon/lat columns. Bad points become NaN."""
    if "csv" in content_type:
        try:
            frame = pd.read_csv(io.BytesIO(body), dtype=str, keep_default_na=False)
        except Exception as exc:  # noqa: BLE001 - any parser failure is bad input
            raise InvalidInput("unreadable CSV",
                               [Problem(reason=f"not CSV: {exc}", field="body")]) from exc
        cols = {c.strip().lower(): c for c in frame.columns}
        pick = {}
        for want, aliases in (("lon", ("lon", "lng", "longitude", "x")),
                              ("lat", ("lat", "latitude", "y"))):
            found = next((cols[a] for a in aliases if a in cols), None)
            if found is None:
                raise InvalidInput("CSV lacks a coordinate column",
                                   [Problem(reason="column missing", field=want)])
            pick[want] = found
        lon = pd.to_numeric(frame[pick["lon"]], errors="coerce").to_numpy(dtype=np.float64)
        lat = pd.to_numeric(frame[pick["lat"]], errors="coerce").to_numpy(dtype=np.float64)
        return lon, lat
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput("body is not JSON", [Problem(reason=str(exc), field="body")]) from exc
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        feats = data.get("features")
        if not isinstance(feats, list):
            raise InvalidInput("bad FeatureCollection",
                               [Problem(reason="features must be an array", field="features")])
        coords = []
        for f in feats:
            geom = f.get("geometry") if isinstance(f, dict) else None
            c = geom.get("coordinates") if isinstance(geom, dict) and geom.get(
                "type") == "Point" else None
            coords.append(c if isinstance(c, list) and len(c) >= 2 else [None, None])
        data = coords
    if not isinstance(data, list):
        raise InvalidInput("batch must be an array",
                           [Problem(reason="expected a JSON array, FeatureCollection or CSV",
                                    field="body")])
    if data and isinstance(data[0], list):
        try:  # the common shape, [[lon, lat], ...], in one numpy call
            arr = np.asarray(data, dtype=np.float64)
        except (TypeError, ValueError):  # ragged or non-numeric: point by point below
            arr = None
        if arr is not None and arr.ndim == 2 and arr.shape[1] == 2:
            return arr[:, 0].copy(), arr[:, 1].copy()
    lon_v = [p.get("lon") if isinstance(p, dict) else (p[0] if isinstance(p, list) and len(p) >= 2
                                                        else None) for p in data]
    lat_v = [p.get("lat") if isinstance(p, dict) else (p[1] if isinstance(p, list) and len(p) >= 2
                                                        else None) for p in data]
    return _floats(lon_v), _floats(lat_v)


def _error_bytes(status: int, district: str) -> bytes:
    reason = {
        lk.NO_GRID: "in no grid",
        lk.OUTSIDE: f"outside district {district}",
        lk.SWAPPED: "lat and lon look swapped",
        lk.INVALID: "not a number",
        lk.OUT_OF_RANGE: "out of range (lon -180..180, lat -90..90)",
    }[status]
    return orjson.dumps({"status": lk.STATUS_NAMES[status], "error": reason, "field": "lon,lat"})


def _entries(index: lk.LookupIndex, gi: np.ndarray, status: np.ndarray) -> np.ndarray:
    """One JSON byte string per point (object array), from per-grid and per-status templates."""
    table = getattr(index, "_batch_templates", None)
    if table is None:
        n = len(index.grid_codes)
        table = np.empty(n + 6, dtype=object)
        for g in range(n):
            street, community, grid = index.hierarchy(g)
            table[g] = orjson.dumps({
                "status": "ok", "grid": grid["code"],
                "community": community["code"] if community else None,
                "street": street["code"] if street else None,
                "district": index.district["code"]})
        for st in (lk.NO_GRID, lk.OUTSIDE, lk.SWAPPED, lk.INVALID, lk.OUT_OF_RANGE):
            table[n + st] = _error_bytes(st, index.district["code"])
        index._batch_templates = table
    n = len(index.grid_codes)
    pick = np.where(status == lk.OK, gi, n + status.astype(np.int64))
    return table[pick]


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
    lon, lat = _parse_batch(body, request.headers.get("content-type", "application/json"))
    n = lon.size
    if n > settings.max_batch_points:
        raise PayloadTooLarge(
            f"{n} points; the limit is {settings.max_batch_points}",
            [Problem(reason=f"more than {settings.max_batch_points} points", field="body")])
    res = lk.locate_batch(request.app.state.engine, lon, lat, crs=name, at=at,
                          max_staleness_ms=0 if at else settings.check_interval_ms,
                          settings=settings)
    index = res["index"]
    entries = _entries(index, res["grid_index"], res["status"])
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
