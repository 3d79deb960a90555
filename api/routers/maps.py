"""HTTP routes for maps: HTML pages (Leaflet via folium) and the vendor JS/CSS they load.

Every asset a page loads is served here under ``/static/vendor`` (no CDN); tiles only if
``WANGGE_MAP_TILE_URL`` is set.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.engine import Connection

from api.dependencies import get_connection
from api.policy import area_within
from geo import mapdata
from geo.settings import DataSettings
from maps import assets
from maps.base import MapSettings
from maps.coverage_map import coverage_map
from maps.grid_map import grid_map
from maps.incident_map import incident_map

router = APIRouter(prefix="/maps", tags=["maps"])

_HTML = {200: {"content": {"text/html": {}}, "description": "A standalone Leaflet HTML page."}}


def on_startup(app: FastAPI) -> None:
    """Serve maps/static/vendor under the configured prefix (default /static/vendor)."""
    settings = MapSettings()
    app.state.map_settings = settings
    assets.VENDOR_DIR.mkdir(parents=True, exist_ok=True)
    prefix = settings.map_static_url.rstrip("/")
    if not any(getattr(r, "path", None) == prefix for r in app.router.routes):
        app.mount(prefix, StaticFiles(directory=assets.VENDOR_DIR), name="map_vendor")


def _settings() -> MapSettings:
    return MapSettings()


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
def map_grids(
    request: Request,
    within: str | None = Within,
    conn: Connection = Depends(get_connection),
    settings: MapSettings = Depends(_settings),
) -> HTMLResponse:
    rule = DataSettings()
    within = area_within(request, within)
    grids = mapdata.grids_for_map(conn, within=within, simplify_m=settings.map_simplify_m)
    parent = within[:9] if within and len(within) >= 9 else within
    page = grid_map(
        grids,
        streets=mapdata.areas_for_map(
            conn, "street", within=parent, simplify_m=settings.map_simplify_m
        ),
        communities=mapdata.areas_for_map(
            conn, "community", within=within, simplify_m=settings.map_simplify_m
        ),
        stations=mapdata.stations_for_map(conn, within=within),
        households_min=rule.households_min,
        households_max=rule.households_max,
        settings=settings,
        asset_base=settings.map_static_url,
    )
    return HTMLResponse(page)


@router.get(
    "/coverage",
    operation_id="map_coverage",
    summary="Coverage map: service circles by station kind, uncovered buildings",
    response_class=HTMLResponse,
    responses=_HTML,
)
def map_coverage(
    request: Request,
    radius_m: float = Query(1000.0, gt=0, le=20000, description="Service radius, metres."),
    kind: str | None = Query(None, description="Only stations of this kind (station_kind code)."),
    within: str | None = Within,
    conn: Connection = Depends(get_connection),
    settings: MapSettings = Depends(_settings),
) -> HTMLResponse:
    return HTMLResponse(
        _coverage_page(conn, radius_m, kind, area_within(request, within), settings,
                       settings.map_static_url)
    )


def _coverage_page(
    conn: Connection,
    radius_m: float,
    kind: str | None,
    within: str | None,
    settings: MapSettings,
    asset_base: str | None,
) -> str:
    inputs = mapdata.coverage_inputs(
        conn, radius_m=radius_m, kind=kind, within=within, simplify_m=settings.map_simplify_m
    )
    return coverage_map(**inputs, radius_m=radius_m, settings=settings, asset_base=asset_base)


@router.get(
    "/incidents",
    operation_id="map_incidents",
    summary="Incident map: clusters by status, overdue, heat map, per-grid choropleths",
    response_class=HTMLResponse,
    responses=_HTML,
)
def map_incidents(
    request: Request,
    within: str | None = Within,
    conn: Connection = Depends(get_connection),
    settings: MapSettings = Depends(_settings),
) -> HTMLResponse:
    within = area_within(request, within)
    page = incident_map(
        mapdata.incidents_for_map(conn, within=within),
        grids=mapdata.areas_for_map(
            conn, "grid", within=within, simplify_m=settings.map_simplify_m
        ),
        settings=settings,
        asset_base=settings.map_static_url,
    )
    return HTMLResponse(page)
