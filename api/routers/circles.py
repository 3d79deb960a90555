"""HTTP routes for service circles, coverage and siting (thin: the work is in ``geo``).

Who may start a run and who may read is in ``api/policy.py`` (planners and commanders). A run
is checked, queued in ``analysis_run`` and answered at once with 202 and the queued run; a runner
thread computes it (``geo.circles.queue``) and ``GET /v1/circles/runs/{id}`` shows its status
and progress. Reads are scoped to the caller's area (``within``), like layers and maps.
GeoJSON answers follow RFC 7946 (lon, lat, WGS 84).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection

from api.dependencies import CONNECTION, READ_CONNECTION, AppSettings
from api.paging import Page, Paging, feature_page, page
from api.policy import PolicyRoute, area_within, caller
from api.schemas import FeatureCollection, FeaturePage, GeoJSONAnswer
from geo.circles.build import circles_geojson
from geo.circles.completeness import completeness
from geo.circles.coverage import coverage_by_level, distances_geojson, uncovered_geojson
from geo.circles.queue import check_request, enqueue, runner_for, stop_runner
from geo.circles.runs import CircleSettings, count_runs, get_run, list_runs
from geo.circles.siting import sites

router = APIRouter(prefix="/v1/circles", tags=["circles"], route_class=PolicyRoute)
circle_settings = AppSettings(CircleSettings, "circle_settings")


def on_shutdown(app: Any) -> None:
    """The engine's analysis runner stops with the app (a queued run waits for the next)."""
    stop_runner(app.state.engine)


def on_startup(app: Any) -> None:
    app.state.circle_settings = CircleSettings()
    runner_for(app.state.engine, app.state.circle_settings)


def _settings(request: Request) -> CircleSettings:
    return circle_settings(request)


class Run(BaseModel):
    id: int
    kind: str
    params: dict[str, Any]
    generation_id: int | None
    source_run_id: int | None
    started_at: datetime
    finished_at: datetime | None
    status: str = Field(description="queued, running, done or failed (reason in "
                        "summary.error)")
    progress: float = Field(0.0, description="Share of the work done, 0-1.")
    requested_by: str | None = None
    summary: dict[str, Any]


class RunPage(Page):
    items: list[Run] = Field(description="This page's runs.")  # type: ignore[assignment]


class CirclesRequest(BaseModel):
    tiers_m: list[float] | None = Field(None, description="Network distances (m); default "
                                        "from settings (300, 500, 1000).", max_length=20)
    clip: Literal["community", "street", "district", "none"] | None = Field(
        None, description="Clip circles to the station's community, street or district; "
        "none (default): the whole walking network, across district borders.")


class CoverageRequest(BaseModel):
    method: Literal["distance", "circles"] | None = Field(
        None, description="distance (default): walking distance from every building to the "
        "nearest station of every kind; circles: building points in stored circles.")
    circles_run_id: int | None = Field(None, description="Circles run (method circles); "
                                       "default the latest.")
    tier_m: float | None = Field(None, gt=0, le=5000,
                                 description="Tier (m) defining coverage; default 300.")


class SitingRequest(BaseModel):
    k: int = Field(5, ge=1, le=200, description="How many new sites.")
    coverage_run_id: int | None = Field(None, description="Coverage run; default the latest.")
    tier_m: float | None = Field(None, gt=0, le=5000,
                                 description="Walking distance (m); default the coverage tier.")
    kind: str | None = Field(None, max_length=64, description="Station kind whose gaps are "
                             "the demand (distance coverage runs); default the life-circle "
                             "kind of the tier that leaves the most residents out.")


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


class CircleProperties(BaseModel):
    station_id: int
    station_code: str
    kind: str = Field(description="Station kind (station_kind code).")
    tier_m: float = Field(description="Walking distance of this circle (m).")
    tier_min: float | None = Field(description="The same as minutes of walking.")


class KindDistance(BaseModel):
    distance_m: float = Field(description="Walking distance to the nearest station (m).")
    minutes: float = Field(description="The same as minutes of walking.")
    station_id: int | None = Field(description="The nearest station of this kind.")


class DistanceProperties(BaseModel):
    code: str = Field(description="Building code.")
    grid_code: str | None
    residents: int
    covered: bool = Field(description="Whether the building is covered in this run.")
    kinds: dict[str, KindDistance | None] = Field(
        description="Per station kind: the nearest station, or null when none within the "
        "run's limit.")


class TierCompleteness(BaseModel):
    distance_m: float = Field(description="Walking distance of this life-circle tier (m).")
    residents_served: int = Field(description="Residents reaching every required kind.")
    share_served: float | None = Field(description="residents_served / residents (0-1).")
    kind_shares: dict[str, float | None] = Field(
        description="Per required kind: share of residents reaching it (0-1).")
    missing_kinds: list[str] = Field(description="Required kinds below the gap share.")


class AreaCompleteness(BaseModel):
    code: str = Field(description="Area code.")
    residents: int
    tiers: dict[str, TierCompleteness] = Field(description="Per tier (minutes of walking).")


class SiteProperties(BaseModel):
    method: str = Field(description="mclp or greedy.")
    rank: int = Field(description="Order in which the site was chosen (1 first).")
    node_id: int | None = Field(description="Walk network node of the site.")
    gain_residents: float = Field(description="Residents newly covered by this site.")
    cumulative_residents: float = Field(
        description="Residents covered by this site and the ones ranked before.")


class SitingResult(BaseModel):
    run_id: int
    summary: dict[str, Any] | None = Field(description="The run's summary.")
    sites: FeatureCollection[SiteProperties] = Field(description="Suggested sites (points).")


class UncoveredProperties(BaseModel):
    code: str
    name: str | None
    grid_code: str | None
    residents: int | None
    households: int | None


WITHIN = Query(None, pattern=r"^[0-9]{6}([0-9]{3}){0,3}$",
               description="Only this area (6, 9, 12 or 15-digit code); a signed-in user reads "
               "only their own area (a wider code is narrowed to it, a disjoint one is 403).")
ACCEPTED = {202: {"description": "Queued; poll GET /v1/circles/runs/{id} (Location header)."}}


def _queue(request: Request, response: Response, conn: Connection, kind: str,
           params: dict[str, Any]) -> dict[str, Any]:
    settings = _settings(request)
    p = check_request(conn, settings, kind, params)
    who = caller(request)
    rid = enqueue(conn, kind, p, who.name if who is not None else None)
    conn.commit()  # visible to the runner before it is woken
    runner_for(request.app.state.engine, settings).wake()
    response.headers["Location"] = f"/v1/circles/runs/{rid}"
    return get_run(conn, rid)


@router.post("/runs", operation_id="create_circles_run", response_model=Run, status_code=202,
             responses=ACCEPTED,
             summary="Queue the walking service circles of every station (pgRouting).")
def create_circles_run(
    body: CirclesRequest, request: Request, response: Response,
    conn: Connection = CONNECTION,
) -> dict[str, Any]:
    return _queue(request, response, conn, "circles", body.model_dump())


@router.get("/runs", operation_id="list_analysis_runs", response_model=RunPage,
            summary="Circles, coverage and siting runs, newest first: a page with the total "
            "and next/prev links.")
def runs(
    request: Request,
    kind: Literal["circles", "coverage", "siting"] | None = None,
    paging: tuple[int, int] = Depends(Paging(100, 1000)),
    conn: Connection = READ_CONNECTION,
) -> dict[str, Any]:
    limit, offset = paging
    return page(request, list_runs(conn, kind, limit, offset), count_runs(conn, kind), limit,
                offset)


@router.get("/runs/{run_id}", operation_id="get_analysis_run", response_model=Run,
            summary="One run: parameters, times, status, progress, summary.")
def run(run_id: int, conn: Connection = READ_CONNECTION) -> dict[str, Any]:
    return get_run(conn, run_id)


@router.get("/runs/{run_id}/circles", operation_id="get_circles",
            response_model=FeaturePage[CircleProperties],
            summary="A circles run's polygons as a GeoJSON FeatureCollection, paged.",
            response_description="RFC 7946 FeatureCollection; properties station_id, "
            "station_code, kind, tier_m, tier_min; total, offset, limit and next/prev links.")
def circles(
    run_id: int, request: Request, tier_m: float | None = None,
    paging: tuple[int, int] = Depends(Paging(10_000, 100_000)), within: str | None = WITHIN,
    conn: Connection = READ_CONNECTION,
) -> GeoJSONAnswer:
    limit, offset = paging
    fc = circles_geojson(conn, run_id, tier_m=tier_m, limit=limit, offset=offset,
                         within=area_within(request, within))
    return GeoJSONAnswer(feature_page(request, fc, limit, offset))


@router.post("/coverage", operation_id="create_coverage_run", response_model=Run,
             status_code=202, responses=ACCEPTED,
             summary="Queue coverage: per-building walking distances to every station kind "
             "(or building points in circles).")
def create_coverage(
    body: CoverageRequest, request: Request, response: Response,
    conn: Connection = CONNECTION,
) -> dict[str, Any]:
    return _queue(request, response, conn, "coverage", body.model_dump())


@router.get("/coverage/{run_id}", operation_id="get_coverage_summary",
            response_model=CoverageSummary,
            summary="Residents and households covered per grid, community or street.")
def coverage_summary(
    run_id: int, request: Request,
    level: Literal["grid", "community", "street", "district", "city"] = "community",
    within: str | None = WITHIN,
    conn: Connection = READ_CONNECTION,
) -> dict[str, Any]:
    return {"run": get_run(conn, run_id, "coverage"),
            "levels": coverage_by_level(conn, run_id, level, area_within(request, within))}


@router.get("/coverage/{run_id}/uncovered", operation_id="get_uncovered_buildings",
            response_model=FeaturePage[UncoveredProperties],
            summary="Buildings no circle covers, as a GeoJSON FeatureCollection of points, "
            "paged.",
            response_description="RFC 7946 FeatureCollection; properties code, name, "
            "grid_code, residents, households; total, offset, limit and next/prev links.")
def uncovered(
    run_id: int, request: Request,
    paging: tuple[int, int] = Depends(Paging(100_000, 1_000_000)),
    within: str | None = WITHIN, conn: Connection = READ_CONNECTION,
) -> GeoJSONAnswer:
    limit, offset = paging
    fc = uncovered_geojson(conn, run_id, limit, area_within(request, within), offset)
    return GeoJSONAnswer(feature_page(request, fc, limit, offset))


@router.get("/coverage/{run_id}/distances", operation_id="get_building_distances",
            response_model=FeaturePage[DistanceProperties],
            summary="Each building's walking distance (m, minutes) to the nearest station of "
            "every kind (distance coverage runs).",
            response_description="RFC 7946 FeatureCollection of building points; properties "
            "code, grid_code, residents, covered, kinds: {kind: {distance_m, minutes, "
            "station_id} or null when none within the run's limit}; total, offset, limit and "
            "next/prev links.")
def building_distances(
    run_id: int, request: Request,
    paging: tuple[int, int] = Depends(Paging(10_000, 100_000)),
    within: str | None = WITHIN, conn: Connection = READ_CONNECTION,
) -> GeoJSONAnswer:
    limit, offset = paging
    speed = _settings(request).walking_speed_m_per_min
    fc = distances_geojson(conn, run_id, speed, limit, area_within(request, within), offset)
    return GeoJSONAnswer(feature_page(request, fc, limit, offset))


@router.get("/coverage/{run_id}/completeness", operation_id="get_life_circle_completeness",
            response_model=list[AreaCompleteness],
            summary="Life-circle completeness (GB 50180-2018): share of residents within 5/10/15 "
            "minutes of every required kind, and the kinds each area lacks.")
def life_circle_completeness(
    run_id: int, request: Request,
    level: Literal["district", "street", "community", "grid"] = "community",
    within: str | None = WITHIN, conn: Connection = READ_CONNECTION,
) -> list[dict[str, Any]]:
    return completeness(conn, _settings(request), run_id, level, area_within(request, within))


@router.post("/siting", operation_id="create_siting_run", response_model=Run, status_code=202,
             responses=ACCEPTED,
             summary="Queue siting: k new station sites (MCLP with spopt, greedy baseline); "
             "the sites are at GET /v1/circles/siting/{id} once done.")
def create_siting(
    body: SitingRequest, request: Request, response: Response,
    conn: Connection = CONNECTION,
) -> dict[str, Any]:
    return _queue(request, response, conn, "siting", body.model_dump())


@router.get("/siting/{run_id}", operation_id="get_siting_run", response_model=SitingResult,
            summary="A siting run's suggested sites.",
            response_description="{run_id, summary, sites: FeatureCollection of points with "
            "method, rank, gain_residents, cumulative_residents}")
def get_siting(run_id: int, conn: Connection = READ_CONNECTION) -> dict[str, Any]:
    return sites(conn, run_id)
