"""HTTP routes for incidents: report, read, the six-step transitions, re-route, urge, escalate,
photos, overdue lists, statistics (JSON and GeoJSON), categories and the routing table.

Operation ids (for api/policy.py): report_incident, get_incident, list_incidents,
transition_incident, reroute_incident, urge_incident, escalate_incidents, attach_incident_photo,
get_incident_photo, overdue_incidents, incident_stats, list_incident_categories,
set_incident_routing, set_incident_sla, list_departments.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from pydantic import BaseModel, Field, StringConstraints
from sqlalchemy.engine import Connection

from api.dependencies import CONNECTION, AppSettings, file_report
from api.incident_schemas import (
    Category,
    Department,
    EscalationOut,
    Incident,
    IncidentDetail,
    OverdueIncident,
    PhotoOut,
    RerouteOut,
    Rollup,
    StatsCollection,
    StepStats,
    SuperviseOut,
    TransitionOut,
    UrgeOut,
)
from api.limits import MAX_LIST_ITEMS
from api.limits import TEXT_LIMITS as L
from api.paging import Page, Paging, page
from api.policy import PolicyRoute, require_overlap, require_step, scope_of
from api.schemas import GeoJSONAnswer
from api.security import current_principal
from geo import incidents as inc
from geo.auth.service import Principal
from geo.core.codes import level_of
from geo.core.errors import Forbidden, InvalidInput, Problem
from geo.data.photos import PHOTO_HEADERS, photo_content_type


class IncidentPage(Page):
    """A page of cases."""

    items: list[Incident]  # type: ignore[assignment]


class OverduePage(Page):
    """A page of overdue cases."""

    items: list[OverdueIncident]  # type: ignore[assignment]


router = APIRouter(prefix="/v1", tags=["incidents"], route_class=PolicyRoute)


def on_startup(app: FastAPI) -> None:
    if not hasattr(app.state, "incident_settings"):
        app.state.incident_settings = inc.IncidentSettings()


incident_settings = AppSettings(inc.IncidentSettings, "incident_settings")
Settings = inc.IncidentSettings


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
    category: str = Field(description="Category (= Open311 service_code), e.g. 'rubbish'.",
                          max_length=L["code"])
    lon: float = Field(description="Longitude in `crs`.")
    lat: float = Field(description="Latitude in `crs`.")
    crs: str = Field("wgs84", description="wgs84 | gcj02 | bd09 | cgcs2000.",
                     max_length=L["code"])
    description: str | None = Field(None, description="What is wrong.",
                                    max_length=L["description"])
    address: str | None = Field(None, description="Free-text address.", max_length=L["address"])
    actor: str | None = Field(None, description="Who reports (when unauthenticated).",
                              max_length=L["actor"])
    reporter_name: str | None = Field(None, description="Kept private, never published.",
                                      max_length=L["reporter_name"])
    reporter_contact: str | None = Field(None, description="Kept private, never published.",
                                         max_length=L["reporter_contact"])


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
                    "rated, closed (in_progress from rated = reopen).", max_length=L["code"])
    note: str | None = Field(None, description="Note for the history.", max_length=L["note"])
    rating: int | None = Field(None, description="1-5, required to enter 'rated'. Only the "
                               "reporter rates, or staff recording a rating given by phone.")
    by_phone: bool = Field(False, description="Staff record a rating the reporter gave by phone "
                           "(marked in the history).")
    actor: str | None = Field(None, description="Who acts (when unauthenticated).",
                              max_length=L["actor"])


Code = Annotated[str, StringConstraints(max_length=L["code"])]
Note = Annotated[str, StringConstraints(max_length=L["note"])]
Actor = Annotated[str, StringConstraints(max_length=L["actor"])]


class RerouteIn(BaseModel):
    departments: list[Code] = Field(description="Department codes that must now respond.",
                                    max_length=MAX_LIST_ITEMS)
    note: Note | None = None
    actor: Actor | None = None


class NoteIn(BaseModel):
    note: Note | None = None
    actor: Actor | None = None


class RoutingIn(BaseModel):
    departments: list[Code] = Field(description="Department codes for this category.",
                                    max_length=MAX_LIST_ITEMS)


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


@router.get("/incidents", operation_id="list_incidents", response_model=IncidentPage,
            summary="List incidents (public fields) by status, category, street, grid, period; "
            "only those in the caller's area, department or own reports; a page with the total "
            "and next/prev links")
def list_incidents(
    request: Request,
    status: list[str] | None = Query(None), category: list[str] | None = Query(None),
    street: str | None = None, grid: str | None = None, start: datetime | None = None,
    end: datetime | None = None, paging: tuple[int, int] = Depends(Paging(100, 10_000)),
    conn: Connection = CONNECTION,
) -> Any:
    require_overlap(request, street=street, grid=grid)
    limit, offset = paging
    filters = {"status": status, "category": category, "street": street, "grid": grid,
               "start": start, "end": end, "scope": scope_of(request)}
    items = inc.list_incidents(conn, **filters, limit=limit, offset=offset)
    return page(request, items, inc.count_incidents(conn, **filters), limit, offset)


@router.get("/incidents/overdue", operation_id="overdue_incidents", response_model=OverduePage,
            summary="Open cases past their deadline (red) or 80 % of it (amber), earliest due "
            "first: a page with the total and next/prev links")
def overdue_incidents(request: Request, street: str | None = None, grid: str | None = None,
                      department: str | None = None, level: str = "red",
                      paging: tuple[int, int] = Depends(Paging(1000, 10_000)),
                      conn: Connection = CONNECTION) -> Any:
    require_overlap(request, street=street, grid=grid)
    limit, offset = paging
    filters = {"street": street, "grid": grid, "department": department, "level": level,
               "scope": scope_of(request)}
    items = inc.overdue(conn, **filters, limit=limit, offset=offset)
    return page(request, items, inc.count_overdue(conn, **filters), limit, offset)


@router.get("/incidents/stats", operation_id="incident_stats",
            summary="Per grid/community/street/department: counts, median hours per step, "
            "satisfaction; GeoJSON FeatureCollection (format=geojson) or JSON list",
            response_model=StatsCollection | list[StepStats])
def incident_stats(request: Request, by: str = "grid", street: str | None = None,
                   start: datetime | None = None, end: datetime | None = None,
                   format: str = "geojson", conn: Connection = CONNECTION) -> Any:
    require_overlap(request, street=street)
    kw = {"by": by, "street": street, "start": start, "end": end, "scope": scope_of(request)}
    if format == "json":
        return inc.stats(conn, **kw)
    return GeoJSONAnswer(inc.stats_geojson(conn, **kw))


@router.post("/incidents/escalate", operation_id="escalate_incidents",
             response_model=list[EscalationOut],
             summary="Escalate grid → street → district every case not checked in within SLA")
def escalate_incidents(request: Request, principal: Principal = Depends(current_principal),
                       conn: Connection = CONNECTION,
                       settings: Settings = Depends(incident_settings)) -> Any:
    return inc.escalate_overdue(conn, settings=settings,
                                actor=_actor(principal, "system"), scope=scope_of(request))


@router.post("/incidents/supervise", operation_id="supervise_overdue_incidents",
             response_model=list[SuperviseOut],
             summary="市委督单: the city command centre supervises every overdue case of its "
             "districts (403 below city level)")
def supervise_overdue_incidents(request: Request,
                                principal: Principal = Depends(current_principal),
                                conn: Connection = CONNECTION) -> Any:
    return inc.supervise_overdue(conn, actor=_actor(principal, "city-command"),
                                 scope=scope_of(request))


@router.get("/incidents/rollup", operation_id="incident_rollup", response_model=Rollup,
            summary="Statistics rolled up per district and per city")
def incident_rollup(request: Request, start: datetime | None = None,
                    end: datetime | None = None,
                    conn: Connection = CONNECTION) -> Any:
    return inc.rollup(conn, start=start, end=end, scope=scope_of(request))


@router.post("/incidents/{incident_id}/supervise", operation_id="supervise_incident",
             response_model=SuperviseOut,
             summary="市委督单: the city command centre supervises one case of any district")
def supervise_incident(incident_id: int, body: NoteIn, request: Request,
                       principal: Principal = Depends(current_principal)) -> Any:
    with request.app.state.engine.begin() as conn:
        return inc.supervise(conn, incident_id, actor=_actor(principal, body.actor),
                             note=body.note, scope=scope_of(request))


@router.get("/incidents/{incident_id}", operation_id="get_incident",
            response_model=IncidentDetail, summary="One case with its history and photos")
def get_incident(incident_id: int, request: Request,
                 conn: Connection = CONNECTION) -> Any:
    return inc.get(conn, incident_id, scope=scope_of(request))


@router.post("/incidents/{incident_id}/transitions", operation_id="transition_incident",
             response_model=TransitionOut,
             summary="Move a case along the six steps; 409 with the reason if illegal")
def transition_incident(incident_id: int, body: TransitionIn, request: Request,
                        principal: Principal = Depends(current_principal),
                        conn: Connection = CONNECTION,
                        settings: Settings = Depends(incident_settings)) -> Any:
    require_step(request, body.to)
    return inc.transition(conn, incident_id, body.to, actor=_actor(principal, body.actor),
                          note=body.note, rating=body.rating, settings=settings,
                          scope=scope_of(request), rater=_rater(principal),
                          by_phone=body.by_phone)


@router.post("/incidents/{incident_id}/reroute", operation_id="reroute_incident",
             response_model=RerouteOut, summary="Send a case to other departments")
def reroute_incident(incident_id: int, body: RerouteIn, request: Request,
                     principal: Principal = Depends(current_principal),
                     conn: Connection = CONNECTION,
                     settings: Settings = Depends(incident_settings)) -> Any:
    return inc.reroute(conn, incident_id, body.departments,
                       actor=_actor(principal, body.actor), note=body.note,
                       settings=settings, scope=scope_of(request))


@router.post("/incidents/{incident_id}/urge", operation_id="urge_incident",
             response_model=UrgeOut, summary="督办: urge and supervise a case")
def urge_incident(incident_id: int, body: NoteIn, request: Request,
                  principal: Principal = Depends(current_principal),
                  conn: Connection = CONNECTION) -> Any:
    return inc.urge(conn, incident_id, actor=_actor(principal, body.actor), note=body.note,
                    scope=scope_of(request))


async def _photo_body(request: Request,
                      settings: Settings = Depends(incident_settings)) -> bytes:
    """The raw request body, read up to one byte past ``photo_max_bytes`` (then refused by
    ``attach_photo``), before a pooled connection is taken for it."""
    data = bytearray()
    async for chunk in request.stream():
        data.extend(chunk)
        if len(data) > settings.photo_max_bytes:
            break
    return bytes(data)


@router.post("/incidents/{incident_id}/photos", operation_id="attach_incident_photo",
             response_model=PhotoOut, status_code=201,
             summary="Attach a photo (raw JPEG, PNG or WebP body) to a case or one history "
             "step; 422 if it does not decode as one, 413 if too large")
def attach_incident_photo(incident_id: int, request: Request, history_id: int | None = None,
                          data: bytes = Depends(_photo_body),
                          conn: Connection = CONNECTION,
                          settings: Settings = Depends(incident_settings)) -> Any:
    # a sync route: decoding and the transaction run in a worker thread, off the event loop
    ctype = "image/jpeg"  # a photo over the size limit is refused below without decoding
    if len(data) <= settings.photo_max_bytes:
        ctype = photo_content_type(data)
    pid = inc.attach_photo(conn, incident_id, data, ctype, settings=settings,
                           history_id=history_id, scope=scope_of(request))
    return {"id": pid, "incident_id": incident_id, "history_id": history_id,
            "size_bytes": len(data)}


@router.get("/incidents/{incident_id}/photos/{photo_id}", operation_id="get_incident_photo",
            summary="A photo's bytes", response_class=Response,
            responses={200: {"content": {"image/*": {}}}})
def get_incident_photo(incident_id: int, photo_id: int, request: Request,
                       conn: Connection = CONNECTION) -> Response:
    data, _ = inc.get_photo(conn, incident_id, photo_id, scope=scope_of(request))
    try:
        ctype, headers = photo_content_type(data, decode=False), PHOTO_HEADERS
    except InvalidInput:  # stored before photos were checked: never shown inline
        ctype = "application/octet-stream"
        headers = {**PHOTO_HEADERS, "Content-Disposition": "attachment"}
    return Response(data, media_type=ctype, headers=headers)


@router.get("/incident-categories", operation_id="list_incident_categories",
            response_model=list[Category],
            summary="Categories with SLAs (working days) and routed departments")
def list_incident_categories(conn: Connection = CONNECTION) -> Any:
    return inc.categories(conn)


@router.put("/incident-categories/{code}/departments", operation_id="set_incident_routing",
            response_model=list[str], summary="Replace the departments a category routes to")
def set_incident_routing(code: str, body: RoutingIn,
                         principal: Principal = Depends(current_principal),
                         conn: Connection = CONNECTION) -> Any:
    _district_wide(principal, "the routing table")
    return inc.set_routing(conn, code, body.departments, actor=_actor(principal, None))


@router.patch("/incident-categories/{code}", operation_id="set_incident_sla",
              response_model=Category, summary="Change a category's SLA (working days)")
def set_incident_sla(code: str, body: SlaIn, principal: Principal = Depends(current_principal),
                     conn: Connection = CONNECTION) -> Any:
    _district_wide(principal, "an SLA")
    return inc.set_sla(conn, code, checkin_workdays=body.checkin_workdays,
                       resolve_workdays=body.resolve_workdays, actor=_actor(principal, None))


@router.get("/departments", operation_id="list_departments",
            response_model=list[Department], summary="Departments that respond to incidents")
def list_departments(conn: Connection = CONNECTION) -> Any:
    return inc.departments(conn)
