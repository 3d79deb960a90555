"""HTTP routes for maps: HTML pages (Leaflet via folium) and the vendor JS/CSS they load.

Every asset a page loads is served here under ``/static/vendor`` (no CDN); tiles only if
``WANGGE_MAP_TILE_URL`` is set.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.engine import Connection

from api.dependencies import AppSettings, read_connection
from api.policy import PolicyRoute, area_within
from geo.core.settings import DataSettings
from geo.data import mapdata
from maps import assets
from maps.base import MapSettings
from maps.coverage_map import coverage_map
from maps.grid_map import grid_map
from maps.incident_map import incident_map

router = APIRouter(prefix="/maps", tags=["maps"], route_class=PolicyRoute)

_HTML = {200: {"content": {"text/html": {}}, "description": "A standalone Leaflet HTML page."}}


def on_startup(app: FastAPI) -> None:
    """Serve maps/static/vendor under the configured prefix (default /static/vendor)."""
    settings = MapSettings()
    app.state.map_settings = settings
    app.state.map_pages = {}
    app.state.map_page_locks = {}
    assets.VENDOR_DIR.mkdir(parents=True, exist_ok=True)
    prefix = settings.map_static_url.rstrip("/")
    if not any(getattr(r, "path", None) == prefix for r in app.router.routes):
        app.mount(prefix, StaticFiles(directory=assets.VENDOR_DIR), name="map_vendor")


map_settings = AppSettings(MapSettings, "map_settings")


async def _page(request: Request, key: tuple[object, ...],
                build: Callable[[Connection], str]) -> HTMLResponse:
    """The page for ``key``: built by ``build`` (in a worker thread) at most every
    ``map_cache_seconds``, one build per key at a time, so a burst of commanders asking for the
    same map costs one build. A pooled connection is taken only to build, never for a cached
    page. The cache and its locks are touched only on the event loop."""
    ttl = map_settings(request).map_cache_seconds
    state = request.app.state

    async def built() -> str:
        async with read_connection(state) as conn:  # a standby's, when there is one
            return await anyio.to_thread.run_sync(build, conn)

    if ttl <= 0 or not hasattr(state, "map_pages"):
        return HTMLResponse(await built())
    hit = state.map_pages.get(key)
    if hit is None or hit[0] < time.monotonic():
        if len(state.map_page_locks) > 256:
            state.map_pages.clear()
            state.map_page_locks.clear()
        key_lock = state.map_page_locks.setdefault(key, anyio.Lock())
        async with key_lock:
            hit = state.map_pages.get(key)
            if hit is None or hit[0] < time.monotonic():
                hit = state.map_pages[key] = (time.monotonic() + ttl, await built())
    return HTMLResponse(hit[1], headers={"Cache-Control": f"private, max-age={int(ttl)}"})


Within = Query(
    None, description="Only areas under this district/street/community/grid code (6, 9, 12 or 15 "
    "digits). A signed-in user sees only their own area: omitted, it is their area; a wider "
    "code is narrowed to it; a code outside it is refused (403).",
)


@router.get(
    "/grids",
    operation_id="map_grids",
    summary="Grid map: streets, communities, grids coloured by household load; four networks",
    response_class=HTMLResponse,
    responses=_HTML,
)
async def map_grids(
    request: Request,
    within: str | None = Within,
    settings: MapSettings = Depends(map_settings),
) -> HTMLResponse:
    within = area_within(request, within)

    def build(conn: Connection) -> str:
        rule = DataSettings()
        return grid_map(
            **mapdata.grid_map_inputs(conn, within=within, simplify_m=settings.map_simplify_m),
            households_min=rule.households_min, households_max=rule.households_max,
            settings=settings, asset_base=settings.map_static_url,
        )

    return await _page(request, ("grids", within), build)


@router.get(
    "/coverage",
    operation_id="map_coverage",
    summary="Coverage map: service circles by station kind, uncovered buildings",
    response_class=HTMLResponse,
    responses=_HTML,
)
async def map_coverage(
    request: Request,
    radius_m: float = Query(1000.0, gt=0, le=20000, description="Service radius, metres."),
    kind: str | None = Query(None, description="Only stations of this kind (station_kind code)."),
    within: str | None = Within,
    settings: MapSettings = Depends(map_settings),
) -> HTMLResponse:
    within = area_within(request, within)
    return await _page(request, ("coverage", radius_m, kind, within), lambda conn: coverage_map(
        **mapdata.coverage_inputs(conn, radius_m=radius_m, kind=kind, within=within,
                                  simplify_m=settings.map_simplify_m),
        radius_m=radius_m, settings=settings, asset_base=settings.map_static_url,
    ))


@router.get(
    "/incidents",
    operation_id="map_incidents",
    summary="Incident map: clusters by status, overdue, heat map, per-grid choropleths",
    response_class=HTMLResponse,
    responses=_HTML,
)
async def map_incidents(
    request: Request,
    within: str | None = Within,
    settings: MapSettings = Depends(map_settings),
) -> HTMLResponse:
    within = area_within(request, within)
    return await _page(request, ("incidents", within), lambda conn: incident_map(
        **mapdata.incident_map_inputs(conn, within=within, simplify_m=settings.map_simplify_m),
        settings=settings, asset_base=settings.map_static_url,
    ))
