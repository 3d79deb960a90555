"""HTTP routes the browser console needs beyond the rest of the API: the session cookie
(sign in, sign out), password change, residents' own registration, SLA counts and trends, the
command map's incident points and base map, a grid's 2+5+N team, and exports of analysis runs.

Operation ids (for api/policy.py): console_sign_in, console_sign_out, change_password,
register_resident, console_counts, console_trend, console_points, console_basemap,
console_grid_team, console_station_kinds, console_export.
"""

from __future__ import annotations

import io
import json
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import orjson
from fastapi import APIRouter, Depends, Form, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection

from api.dependencies import CONNECTION, READ_CONNECTION, read_engine
from api.policy import PolicyRoute, area_within, require_area, scope_of
from api.routers.incidents import incident_settings
from api.security import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    RateLimited,
    client_address,
    csrf_token,
    current_principal,
)
from geo.auth.account import change_password, register_resident
from geo.auth.service import Principal, authenticate, issue_token
from geo.circles.build import circles_geojson
from geo.circles.coverage import uncovered_geojson
from geo.circles.siting import sites
from geo.core.errors import InvalidInput, Problem, Unauthenticated
from geo.core.replica import replay_horizon
from geo.data import mapdata
from geo.incidents import dashboard
from maps.base import feature_collection

router = APIRouter(prefix="/v1/console", tags=["console"], route_class=PolicyRoute)

# Where each role's console starts.
HOME = {"commander": "/console/commander", "grid_worker": "/console/worker",
        "department_staff": "/console/department", "resident": "/console/resident",
        "planner": "/console/analyst", "admin": "/console/commander"}
REGISTER_PER_MINUTE = 5
BASEMAP_SECONDS = 300.0
_basemap_lock = threading.Lock()


class SignedIn(BaseModel):
    name: str
    role: str | None
    area_code: str | None
    home: str = Field(description="The console page for this role.")
    csrf_token: str = Field(description="Send as X-CSRF-Token with state-changing requests.")


class PasswordIn(BaseModel):
    old_password: str = Field(min_length=1, max_length=256)
    new_password: str = Field(min_length=1, max_length=256)


class RegisterIn(BaseModel):
    username: str = Field(min_length=2, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    password: str = Field(min_length=1, max_length=256)


@router.post("/session", operation_id="console_sign_in", response_model=SignedIn,
             summary="Sign in from the browser: sets the HttpOnly session cookie and the CSRF "
             "token cookie")
def sign_in(request: Request, response: Response, username: str = Form(max_length=64),
            password: str = Form(max_length=256),
            conn: Connection = CONNECTION) -> Any:
    settings = request.app.state.auth_settings
    principal = authenticate(conn, username, password)
    token = issue_token(principal, settings)
    csrf = csrf_token(token, settings)
    secure = request.url.scheme == "https"
    age = settings.jwt_ttl_minutes * 60
    response.set_cookie(SESSION_COOKIE, token, max_age=age, httponly=True, samesite="strict",
                        secure=secure, path="/")
    response.set_cookie(CSRF_COOKIE, csrf, max_age=age, httponly=False, samesite="strict",
                        secure=secure, path="/")
    return SignedIn(name=principal.name, role=principal.role, area_code=principal.area_code,
                    home=HOME.get(principal.role or "", "/console/account"), csrf_token=csrf)


@router.delete("/session", operation_id="console_sign_out", status_code=204,
               summary="Sign out: clears the session cookies")
def sign_out() -> Response:
    out = Response(status_code=204)
    out.delete_cookie(SESSION_COOKIE, path="/")
    out.delete_cookie(CSRF_COOKIE, path="/")
    return out


@router.post("/password", operation_id="change_password", status_code=204,
             summary="Change the signed-in user's password (the current one is checked)")
def password(body: PasswordIn, request: Request,
             principal: Principal = Depends(current_principal),
             conn: Connection = CONNECTION) -> Response:
    if principal.kind != "user":
        raise Unauthenticated("only a signed-in user has a password")
    change_password(conn, principal.name, body.old_password, body.new_password,
                    settings=request.app.state.auth_settings)
    return Response(status_code=204)


@router.post("/residents", operation_id="register_resident", status_code=201,
             summary="A resident registers an account (rate-limited per address)")
def register(body: RegisterIn, request: Request,
             conn: Connection = CONNECTION) -> dict[str, Any]:
    wait = request.app.state.rate_limiter.hit(f"register:{client_address(request)}",
                                              REGISTER_PER_MINUTE)
    if wait is not None:
        raise RateLimited(wait)
    uid = register_resident(conn, body.username, body.password,
                            settings=request.app.state.auth_settings)
    return {"id": uid, "username": body.username, "role": "resident"}


Within = Query(None, pattern=r"^[0-9]{2}([0-9]{2}([0-9]{2}([0-9]{3}){0,3})?)?$",
               description="Only this area (a 2-digit province, 4-digit city or 6-15 digit "
               "code), narrowed to the caller's own.")


@router.get("/counts", operation_id="console_counts", response_model=list[dict[str, Any]],
            summary="Open cases by SLA state (green/amber/red) and cases closed in the last "
            "30 days, per city, district, street, community, grid or department")
def counts(request: Request,
           by: Literal["city", "district", "street", "community", "grid", "department"] = "street",
           within: str | None = Within, conn: Connection = READ_CONNECTION) -> Any:
    return dashboard.counts(conn, by=by, scope=scope_of(request),
                            within=area_within(request, within))


@router.get("/trend", operation_id="console_trend", response_model=list[dict[str, Any]],
            summary="Cases reported and closed per day (China Standard Time)")
def trend(request: Request, days: int = Query(30, ge=1, le=366), within: str | None = Within,
          conn: Connection = READ_CONNECTION) -> Any:
    return dashboard.trend(conn, days=days, scope=scope_of(request),
                           within=area_within(request, within))


@router.get("/points", operation_id="console_points", response_model=dict[str, Any],
            summary="The command map's incidents (open and recently closed), compact rows; "
            "with `since` (the previous answer's `next_since`), only those changed after it")
def points(request: Request, since: datetime | None = None, within: str | None = Within,
           conn: Connection = READ_CONNECTION) -> Response:
    found = dashboard.map_points(
        conn, scope=scope_of(request), since=since, within=area_within(request, within),
        now=_horizon(request, conn, since),
        overlap_s=incident_settings(request).map_refresh_overlap_s)
    # tens of thousands of rows: orjson straight to bytes (the generic encoder took ~0.5 s)
    return Response(orjson.dumps(found), media_type="application/json")


def _horizon(request: Request, conn: Connection, since: datetime | None) -> datetime | None:
    """The ``now`` for the command map's next ``since``: None (the server's clock) on the
    primary; on a standby the commit time of the last transaction it replayed, since what it
    shows is complete only up to there (``geo.core.replica.replay_horizon``)."""
    if conn.engine is request.app.state.engine:
        return None
    standby, replayed = replay_horizon(conn)
    if not standby:
        return None
    return min(replayed, datetime.now(UTC)) if replayed is not None else since


@router.get("/basemap/{level}", operation_id="console_basemap", response_model=dict[str, Any],
            summary="District, street, community or grid boundaries of the caller's area, "
            "simplified for display (GeoJSON, WGS 84, 5 decimals)")
def basemap(level: Literal["district", "street", "community", "grid"], request: Request,
            within: str | None = Within) -> Response:
    area = area_within(request, within)
    key = (level, area)
    cache = getattr(request.app.state, "console_basemaps", None)
    if cache is None:
        cache = request.app.state.console_basemaps = {}
    with _basemap_lock:
        hit = cache.get(key)
        if hit is None or hit[0] < time.monotonic():
            with read_engine(request.app.state).connect() as conn:
                gdf = mapdata.areas_for_map(conn, level, within=area, simplify_m=3.0)
            body = orjson.dumps(feature_collection(gdf, ["code", "name"], decimals=5))
            if len(cache) > 64:
                cache.clear()
            hit = cache[key] = (time.monotonic() + BASEMAP_SECONDS, body)
    return Response(hit[1], media_type="application/geo+json",
                    headers={"Cache-Control": f"private, max-age={int(BASEMAP_SECONDS)}"})


@router.get("/grids/{code}/team", operation_id="console_grid_team",
            response_model=dict[str, Any],
            summary="A grid's 2+5+N team, with the gaps against the rule")
def grid_team(code: str, request: Request, conn: Connection = READ_CONNECTION) -> Any:
    if not (len(code) == 15 and code.isdigit()):
        raise InvalidInput("a grid code is 15 digits", [Problem(reason="bad code", field="code")])
    require_area(request, code)
    return dashboard.grid_team(conn, code)


@router.get("/station-kinds", operation_id="console_station_kinds",
            response_model=list[dict[str, Any]], summary="Station kinds with Chinese names")
def station_kinds(conn: Connection = READ_CONNECTION) -> Any:
    return dashboard.station_kinds(conn)


@router.get("/export/{run_id}", operation_id="console_export",
            summary="An analysis run's result as GeoPackage, GeoJSON or CSV (WGS 84)",
            response_class=Response)
def export(run_id: int, what: Literal["circles", "uncovered", "sites"],
           format: Literal["gpkg", "geojson", "csv"] = "geojson",
           tier_m: float | None = Query(None, gt=0, le=100_000),
           conn: Connection = READ_CONNECTION) -> Response:
    if what == "circles":
        fc = circles_geojson(conn, run_id, tier_m=tier_m)  # the whole run: a file
    elif what == "uncovered":
        fc = uncovered_geojson(conn, run_id)
        names = dashboard.area_names(conn, sorted({
            c for f in fc["features"] for c in (f["properties"].get("grid_code"),) if c}))
        for f in fc["features"]:
            f["properties"]["grid_name"] = names.get(f["properties"].get("grid_code") or "")
    else:
        fc = sites(conn, run_id)["sites"]
    name = f"wangge-{what}-{run_id}"
    if format == "geojson":
        return Response(json.dumps(fc, ensure_ascii=False, default=str),
                        media_type="application/geo+json",
                        headers={"Content-Disposition": f'attachment; filename="{name}.geojson"'})
    gdf = (gpd.GeoDataFrame.from_features(fc["features"], crs=4326) if fc["features"]
           else gpd.GeoDataFrame({"geometry": []}, geometry="geometry", crs=4326))
    if format == "csv":
        out = gdf.drop(columns="geometry").assign(wkt=gdf.geometry.to_wkt())
        buf = io.StringIO()
        out.to_csv(buf, index=False)
        return Response("\ufeff" + buf.getvalue(), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})
    with tempfile.TemporaryDirectory(prefix="wangge-export-") as tmp:
        path = Path(tmp) / f"{name}.gpkg"
        for col in gdf.columns:
            if col != "geometry" and gdf[col].map(lambda v: isinstance(v, list | dict)).any():
                gdf[col] = gdf[col].map(lambda v: json.dumps(v, ensure_ascii=False)
                                        if isinstance(v, list | dict) else v)
        gdf.to_file(path, layer=what, driver="GPKG")
        data = path.read_bytes()
    return Response(data, media_type="application/geopackage+sqlite3",
                    headers={"Content-Disposition": f'attachment; filename="{name}.gpkg"'})
