"""HTTP routes for incidents: report, read, the six-step transitions, re-route, urge, escalate,
photos, overdue lists, statistics (JSON and GeoJSON), categories and the routing table.

Operation ids (for api/policy.py): report_incident, get_incident, list_incidents,
transition_incident, reroute_incident, urge_incident, escalate_incidents, attach_incident_photo,
get_incident_photo, overdue_incidents, incident_stats, list_incident_categories,
set_incident_routing, set_incident_sla, list_departments.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool

from api.dependencies import file_report, get_connection
from api.policy import PolicyRoute, require_overlap, require_step, scope_of
from api.security import current_principal
from geo import incidents as inc
from geo.auth.service import Principal
from geo.core.codes import level_of
from geo.core.errors import Forbidden, Problem

router = APIRouter(prefix="/v1", tags=["incidents"], route_class=PolicyRoute)


def on_startup(app: FastAPI) -> None:
    if not hasattr(app.state, "incident_settings"):
        app.state.incident_settings = inc.IncidentSettings()


def _settings(request: Request) -> inc.IncidentSettings:
    s = getattr(request.app.state, "incident_settings", None)
    if s is None:
        s = request.app.state.incident_settings = inc.IncidentSettings()
    return s


def _actor(principal: Principal, given: str | None) -> str:
    if principal.kind != "anonymous":
        return f"{principal.kind}:{principal.name}"
    return given or "anonymous"


def _rater(principal: Principal) -> tuple[int | None, str | None] | None:
    """(user id, role) of a signed-in caller for the rating rule; a key acts as a system."""
    if principal.kind == "user":
        return principal.user_id, principal.role
    return (None, "system") if principal.kind == "api_key" else None


def _district_wide(principal: Principal, what: str) -> None:
    """Refuse (403) a district-wide edit by a user whose area is below district level."""
    area = principal.area_code
    if principal.kind == "user" and principal.role != "admin" and area \
            and level_of(area) != "district":
        raise Forbidden(f"{what} is district-wide: it needs a district-level area, not "
                        f"{area} ({level_of(area) or 'unknown level'})",
                        [Problem(reason="area below district level", field="area_code")])


class ReportIn(BaseModel):
    category: str = Field(description="Category (= Open311 service_code), e.g. 'rubbish'.")
    lon: float = Field(description="Longitude in `crs`.")
    lat: float = Field(description="Latitude in `crs`.")
    crs: str = Field("wgs84", description="wgs84 | gcj02 | bd09 | cgcs2000.")
    description: str | None = Field(None, description="What is wrong.")
    address: str | None = Field(None, description="Free-text address.")
    actor: str | None = Field(None, description="Who reports (when unauthenticated).")
    reporter_name: str | None = Field(None, description="Kept private, never published.")
    reporter_contact: str | None = Field(None, description="Kept private, never published.")


class ReportOut(BaseModel):
    id: int = Field(description="Case id (committed before this answer is sent).")
    status: str = Field(description="'reported', or 'duplicate' when linked to an open case.")
    duplicate_of: int | None = Field(description="The open case this report was linked to.")
    grid_code: str | None
    community_code: str | None
    street_code: str | None
    near_boundary: bool = Field(description="Within a few metres of a grid boundary: confirm.")
    boundary_distance_m: float | None = Field(description="Distance to the grid boundary (m).")
    department_ids: list[int]
    checkin_due: datetime
    resolve_due: datetime


class TransitionIn(BaseModel):
    to: str = Field(description="Target status: checked_in, consulting, in_progress, feedback, "
                    "rated, closed (in_progress from rated = reopen).")
    note: str | None = Field(None, description="Note for the history.")
    rating: int | None = Field(None, description="1-5, required to enter 'rated'. Only the "
                               "reporter rates, or staff recording a rating given by phone.")
    by_phone: bool = Field(False, description="Staff record a rating the reporter gave by phone "
                           "(marked in the history).")
    actor: str | None = Field(None, description="Who acts (when unauthenticated).")


class RerouteIn(BaseModel):
    departments: list[str] = Field(description="Department codes that must now respond.")
    note: str | None = None
    actor: str | None = None


class NoteIn(BaseModel):
    note: str | None = None
    actor: str | None = None


class RoutingIn(BaseModel):
    departments: list[str] = Field(description="Department codes for this category.")


class SlaIn(BaseModel):
    checkin_workdays: float | None = Field(None, description="Check-in deadline, working days.")
    resolve_workdays: float | None = Field(None, description="Resolution deadline, working days.")


@router.post("/incidents", operation_id="report_incident", response_model=ReportOut,
             status_code=201, summary="Report an incident (吹哨): locate, route, detect duplicates")
async def report_incident(body: ReportIn, request: Request,
                          principal: Principal = Depends(current_principal)) -> Any:
    res = await file_report(  # the answer is sent only after the commit
        request, category=body.category, lon=body.lon, lat=body.lat, crs=body.crs,
        description=body.description, address=body.address,
        actor=_actor(principal, body.actor), source="api", reporter_name=body.reporter_name,
        reporter_contact=body.reporter_contact,
        reporter_user_id=principal.user_id if principal.kind == "user" else None)
    return res.__dict__


@router.get("/incidents", operation_id="list_incidents", response_model=list[dict[str, Any]],
            summary="List incidents (public fields) by status, category, street, grid, period; "
            "only those in the caller's area, department or own reports")
def list_incidents(
    request: Request,
    status: list[str] | None = Query(None), category: list[str] | None = Query(None),
    street: str | None = None, grid: str | None = None, start: datetime | None = None,
    end: datetime | None = None, limit: int = Query(100, ge=1, le=10_000),
    conn: Connection = Depends(get_connection),
) -> Any:
    require_overlap(request, street=street, grid=grid)
    return inc.list_incidents(conn, status=status, category=category, street=street, grid=grid,
                              start=start, end=end, limit=limit, scope=scope_of(request))


@router.get("/incidents/overdue", operation_id="overdue_incidents",
            response_model=list[dict[str, Any]],
            summary="Open cases past their deadline (red) or 80 % of it (amber)")
def overdue_incidents(request: Request, street: str | None = None, grid: str | None = None,
                      department: str | None = None, level: str = "red",
                      limit: int = Query(1000, ge=1, le=10_000),
                      conn: Connection = Depends(get_connection)) -> Any:
    require_overlap(request, street=street, grid=grid)
    return inc.overdue(conn, street=street, grid=grid, department=department, level=level,
                       limit=limit, scope=scope_of(request))


@router.get("/incidents/stats", operation_id="incident_stats",
            summary="Per grid/community/street/department: counts, median hours per step, "
            "satisfaction; GeoJSON FeatureCollection (format=geojson) or JSON list",
            response_model=dict[str, Any] | list[dict[str, Any]])
def incident_stats(request: Request, by: str = "grid", street: str | None = None,
                   start: datetime | None = None, end: datetime | None = None,
                   format: str = "geojson", conn: Connection = Depends(get_connection)) -> Any:
    require_overlap(request, street=street)
    kw = {"by": by, "street": street, "start": start, "end": end, "scope": scope_of(request)}
    return inc.stats(conn, **kw) if format == "json" else inc.stats_geojson(conn, **kw)


@router.post("/incidents/escalate", operation_id="escalate_incidents",
             response_model=list[dict[str, Any]],
             summary="Escalate grid → street → district every case not checked in within SLA")
def escalate_incidents(request: Request, principal: Principal = Depends(current_principal),
                       conn: Connection = Depends(get_connection)) -> Any:
    return inc.escalate_overdue(conn, settings=_settings(request),
                                actor=_actor(principal, "system"), scope=scope_of(request))


@router.get("/incidents/{incident_id}", operation_id="get_incident",
            response_model=dict[str, Any], summary="One case with its history and photos")
def get_incident(incident_id: int, request: Request,
                 conn: Connection = Depends(get_connection)) -> Any:
    return inc.get(conn, incident_id, scope=scope_of(request))


@router.post("/incidents/{incident_id}/transitions", operation_id="transition_incident",
             response_model=dict[str, Any],
             summary="Move a case along the six steps; 409 with the reason if illegal")
def transition_incident(incident_id: int, body: TransitionIn, request: Request,
                        principal: Principal = Depends(current_principal)) -> Any:
    require_step(request, body.to)
    with request.app.state.engine.begin() as conn:
        return inc.transition(conn, incident_id, body.to, actor=_actor(principal, body.actor),
                              note=body.note, rating=body.rating, settings=_settings(request),
                              scope=scope_of(request), rater=_rater(principal),
                              by_phone=body.by_phone)


@router.post("/incidents/{incident_id}/reroute", operation_id="reroute_incident",
             response_model=dict[str, Any], summary="Send a case to other departments")
def reroute_incident(incident_id: int, body: RerouteIn, request: Request,
                     principal: Principal = Depends(current_principal)) -> Any:
    with request.app.state.engine.begin() as conn:
        return inc.reroute(conn, incident_id, body.departments,
                           actor=_actor(principal, body.actor), note=body.note,
                           settings=_settings(request), scope=scope_of(request))


@router.post("/incidents/{incident_id}/urge", operation_id="urge_incident",
             response_model=dict[str, Any], summary="督办: urge and supervise a case")
def urge_incident(incident_id: int, body: NoteIn, request: Request,
                  principal: Principal = Depends(current_principal)) -> Any:
    with request.app.state.engine.begin() as conn:
        return inc.urge(conn, incident_id, actor=_actor(principal, body.actor), note=body.note,
                        scope=scope_of(request))


@router.post("/incidents/{incident_id}/photos", operation_id="attach_incident_photo",
             response_model=dict[str, Any], status_code=201,
             summary="Attach a photo (raw image body) to a case or one history step; 413 if "
             "too large")
async def attach_incident_photo(incident_id: int, request: Request,
                                history_id: int | None = None) -> Any:
    settings = _settings(request)
    data = bytearray()
    async for chunk in request.stream():
        data.extend(chunk)
        if len(data) > settings.photo_max_bytes:
            break
    ctype = request.headers.get("content-type", "")

    def store() -> int:  # in a worker thread: the event loop never waits on the database
        with request.app.state.engine.begin() as conn:
            return int(inc.attach_photo(conn, incident_id, bytes(data), ctype,
                                        settings=settings, history_id=history_id,
                                        scope=scope_of(request)))

    pid = await run_in_threadpool(store)
    return {"id": pid, "incident_id": incident_id, "history_id": history_id,
            "size_bytes": len(data)}


@router.get("/incidents/{incident_id}/photos/{photo_id}", operation_id="get_incident_photo",
            summary="A photo's bytes", response_class=Response,
            responses={200: {"content": {"image/*": {}}}})
def get_incident_photo(incident_id: int, photo_id: int, request: Request,
                       conn: Connection = Depends(get_connection)) -> Response:
    data, ctype = inc.get_photo(conn, incident_id, photo_id, scope=scope_of(request))
    return Response(data, media_type=ctype)


@router.get("/incident-categories", operation_id="list_incident_categories",
            response_model=list[dict[str, Any]],
            summary="Categories with SLAs (working days) and routed departments")
def list_incident_categories(conn: Connection = Depends(get_connection)) -> Any:
    return inc.categories(conn)


@router.put("/incident-categories/{code}/departments", operation_id="set_incident_routing",
            response_model=list[str], summary="Replace the departments a category routes to")
def set_incident_routing(code: str, body: RoutingIn,
                         principal: Principal = Depends(current_principal),
                         conn: Connection = Depends(get_connection)) -> Any:
    _district_wide(principal, "the routing table")
    return inc.set_routing(conn, code, body.departments, actor=_actor(principal, None))


@router.patch("/incident-categories/{code}", operation_id="set_incident_sla",
              response_model=dict[str, Any], summary="Change a category's SLA (working days)")
def set_incident_sla(code: str, body: SlaIn, principal: Principal = Depends(current_principal),
                     conn: Connection = Depends(get_connection)) -> Any:
    _district_wide(principal, "an SLA")
    return inc.set_sla(conn, code, checkin_workdays=body.checkin_workdays,
                       resolve_workdays=body.resolve_workdays, actor=_actor(principal, None))


@router.get("/departments", operation_id="list_departments",
            response_model=list[dict[str, Any]], summary="Departments that respond to incidents")
def list_departments(conn: Connection = Depends(get_connection)) -> Any:
    return inc.departments(conn)
