"""HTTP routes for service circles, coverage and siting (thin: the work is in ``geo``).

Reading is open; starting a run needs a planner or commander (or an API key with the
``analysis`` scope). GeoJSON answers follow RFC 7946 (lon, lat, WGS 84).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection

from api.dependencies import get_connection
from api.paging import Page, Paging, page
from api.policy import PolicyRoute
from api.security import require
from geo.circles.build import build_circles, circles_geojson
from geo.circles.coverage import coverage_by_level, run_coverage, uncovered_geojson
from geo.circles.runs import CircleSettings, count_runs, get_run, list_runs
from geo.circles.siting import run_siting, sites

router = APIRouter(prefix="/v1/circles", tags=["circles"], route_class=PolicyRoute)
WRITE = require("planner", "commander", scope="analysis")


def on_startup(app: Any) -> None:
    app.state.circle_settings = CircleSettings()


def _settings(request: Request) -> CircleSettings:
    return getattr(request.app.state, "circle_settings", None) or CircleSettings()


class Run(BaseModel):
    id: int
    kind: str
    params: dict[str, Any]
    generation_id: int | None
    source_run_id: int | None
    started_at: datetime
    finished_at: datetime | None
    status: str
    summary: dict[str, Any]


class RunPage(Page):
    items: list[Run] = Field(description="This page's runs.")  # type: ignore[assignment]


class CirclesRequest(BaseModel):
    tiers_m: list[float] | None = Field(None, description="Network distances (m); default "
                                        "from settings (300, 500, 1000).")
    clip: Literal["community", "street", "none"] | None = Field(
        None, description="Clip circles to the station's community or street.")


class CoverageRequest(BaseModel):
    circles_run_id: int | None = Field(None, description="Circles run; default the latest.")
    tier_m: float | None = Field(None, description="Tier (m) defining coverage; default 300.")


class SitingRequest(BaseModel):
    k: int = Field(5, ge=1, le=200, description="How many new sites.")
    coverage_run_id: int | None = Field(None, description="Coverage run; default the latest.")
    tier_m: float | None = Field(None, gt=0, le=5000,
                                 description="Walking distance (m); default the coverage tier.")


class LevelCoverage(BaseModel):
    code: str | None
    buildings: int
    buildings_covered: int
    residents: int
    residents_covered: int
    households: int
    households_covered: int
    share_residents_covered: float | None


class CoverageSummary(BaseModel):
    run: Run
    levels: list[LevelCoverage]


@router.post("/runs", operation_id="create_circles_run", response_model=Run, status_code=201,
             summary="Compute the walking service circles of every station (pgRouting).")
def create_circles_run(
    body: CirclesRequest, request: Request, conn: Connection = Depends(get_connection),
    _: Any = Depends(WRITE),
) -> dict[str, Any]:
    rid = build_circles(conn, _settings(request), tiers_m=body.tiers_m, clip=body.clip)
    return get_run(conn, rid)


@router.get("/runs", operation_id="list_analysis_runs", response_model=RunPage,
            summary="Circles, coverage and siting runs, newest first: a page with the total "
            "and next/prev links.")
def runs(
    request: Request,
    kind: Literal["circles", "coverage", "siting"] | None = None,
    paging: tuple[int, int] = Depends(Paging(100, 1000)),
    conn: Connection = Depends(get_connection),
) -> dict[str, Any]:
    limit, offset = paging
    return page(request, list_runs(conn, kind, limit, offset), count_runs(conn, kind), limit,
                offset)


@router.get("/runs/{run_id}", operation_id="get_analysis_run", response_model=Run,
            summary="One run: parameters, times, status, summary.")
def run(run_id: int, conn: Connection = Depends(get_connection)) -> dict[str, Any]:
    return get_run(conn, run_id)


@router.get("/runs/{run_id}/circles", operation_id="get_circles",
            summary="A circles run's polygons as a GeoJSON FeatureCollection.",
            response_description="RFC 7946 FeatureCollection; properties station_id, "
            "station_code, kind, tier_m, tier_min.")
def circles(
    run_id: int, tier_m: float | None = None, limit: int = Query(10000, ge=1, le=100000),
    conn: Connection = Depends(get_connection),
) -> dict[str, Any]:
    return circles_geojson(conn, run_id, tier_m=tier_m, limit=limit)


@router.post("/coverage", operation_id="create_coverage_run", response_model=Run,
             status_code=201, summary="Which buildings the circles cover, by which stations.")
def create_coverage(
    body: CoverageRequest, request: Request, conn: Connection = Depends(get_connection),
    _: Any = Depends(WRITE),
) -> dict[str, Any]:
    rid = run_coverage(conn, _settings(request), circles_run_id=body.circles_run_id,
                       tier_m=body.tier_m)
    return get_run(conn, rid)


@router.get("/coverage/{run_id}", operation_id="get_coverage_summary",
            response_model=CoverageSummary,
            summary="Residents and households covered per grid, community or street.")
def coverage_summary(
    run_id: int, level: Literal["grid", "community", "street"] = "community",
    conn: Connection = Depends(get_connection),
) -> dict[str, Any]:
    return {"run": get_run(conn, run_id, "coverage"),
            "levels": coverage_by_level(conn, run_id, level)}


@router.get("/coverage/{run_id}/uncovered", operation_id="get_uncovered_buildings",
            summary="Buildings no circle covers, as a GeoJSON FeatureCollection of points.",
            response_description="RFC 7946 FeatureCollection; properties code, name, "
            "grid_code, residents, households.")
def uncovered(
    run_id: int, limit: int = Query(100000, ge=1, le=1000000),
    conn: Connection = Depends(get_connection),
) -> dict[str, Any]:
    return uncovered_geojson(conn, run_id, limit)


@router.post("/siting", operation_id="create_siting_run", status_code=201,
             summary="Suggest k new station sites (MCLP with spopt, greedy baseline).",
             response_description="{run_id, summary, sites: FeatureCollection of points with "
             "method, rank, gain_residents, cumulative_residents}")
def create_siting(
    body: SitingRequest, request: Request, conn: Connection = Depends(get_connection),
    _: Any = Depends(WRITE),
) -> dict[str, Any]:
    rid = run_siting(conn, _settings(request), k=body.k, coverage_run_id=body.coverage_run_id,
                     tier_m=body.tier_m)
    return sites(conn, rid)


@router.get("/siting/{run_id}", operation_id="get_siting_run",
            summary="A siting run's suggested sites.")
def get_siting(run_id: int, conn: Connection = Depends(get_connection)) -> dict[str, Any]:
    return sites(conn, run_id)
