"""Open311 GeoReport v2, JSON and XML on every path: discovery, services, service definitions,
requests (GET with filters, paging and a radius search; POST), one request.

The categories are the services. Status is the spec's ``open``/``closed``: every step of the
six-step loop is ``open`` until the case is closed; a duplicate is ``closed`` with a note naming
the case it joined. Answers and errors follow ``api.georeport`` (the spec's error list and
status codes, in the path's format). Output carries no personal data (reporter name, e-mail,
phone and device stay private). A list of requests is one page: ``X-Total-Count`` holds how
many matched and a ``Link`` header the ``next``/``prev`` pages (RFC 8288).

Operation ids (for api/policy.py): open311_discovery, open311_services,
open311_service_definition, open311_requests, open311_post_request, open311_request. POST needs
an ``api_key`` with the ``open311`` scope.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import anyio
from fastapi import APIRouter, FastAPI, Request, Response
from pydantic import BaseModel, Field

from api.dependencies import file_report
from api.georeport import FORMATS, Open311Route, PathCORS, answer, error_answer, fmt_of
from api.limits import check_form
from api.paging import check_page, page_links
from api.security import verified_key
from geo import incidents as inc
from geo.core.errors import Forbidden, InvalidInput, NotFound, Problem, Unauthenticated

router = APIRouter(prefix="/open311", tags=["open311"], route_class=Open311Route)

OPEN311_STATUS = {s: ("closed" if s in ("closed", "duplicate") else "open")
                  for s in inc.STATUSES}
AGENCY = "网格化服务管理中心 Grid management centre"
_EARLIEST = datetime.min.replace(tzinfo=UTC)
SPEC = "http://wiki.open311.org/GeoReport_v2"
CHANGESET = "2026-12-02T00:00:00Z"  # when this endpoint's behaviour last changed
MAX_PAGE_SIZE = 1000
MAX_RADIUS_M = 50_000.0


class Endpoint(BaseModel):
    specification: str = Field(description="The specification's URL (GeoReport v2).")
    url: str = Field(description="The endpoint's base URL.")
    changeset: str = Field(description="When its behaviour last changed (ISO 8601).")
    type: str = Field(description="production, test, ...")
    formats: list[str] = Field(description="Media types it answers in.")


class Discovery(BaseModel):
    changeset: str = Field(description="When this endpoint's behaviour last changed (ISO 8601).")
    contact: str
    key_service: str = Field(description="How to get an api_key.")
    endpoints: list[Endpoint]


class Service(BaseModel):
    service_code: str = Field(description="The incident category code.")
    service_name: str
    description: str
    metadata: bool = Field(description="Whether the service has extra attributes (never).")
    type: str = Field(description="realtime.")
    keywords: str
    group: str


class ServiceDefinition(BaseModel):
    service_code: str
    attributes: list[dict[str, Any]] = Field(description="Extra attributes (none).")


class ServiceRequest(BaseModel):
    service_request_id: str
    status: str = Field(description="open or closed.")
    status_notes: str | None
    service_name: str
    service_code: str
    description: str | None
    agency_responsible: str = Field(description="The departments responsible.")
    service_notice: str
    requested_datetime: str | None = Field(description="When reported (ISO 8601, UTC).")
    updated_datetime: str | None = Field(description="Last change (ISO 8601, UTC).")
    expected_datetime: str | None = Field(description="Resolution deadline (ISO 8601, UTC).")
    address: str | None
    address_id: str | None = Field(description="Always null.")
    zipcode: str | None = Field(description="Always null.")
    lat: float | None = Field(description="Latitude (WGS 84 degrees).")
    long: float | None = Field(description="Longitude (WGS 84 degrees).")
    media_url: str | None


class CreatedRequest(BaseModel):
    service_request_id: str
    service_notice: str = Field(description="Received, or the case it was merged into.")
    account_id: str | None = Field(description="Always null.")


def _xml_json(model: Any) -> dict[int | str, dict[str, Any]]:
    """A 200 answered in JSON (documented by ``model``) or XML, as the path's extension says."""
    return {200: {"model": model, "content": {"application/json": {}, "text/xml": {}},
                  "description": "JSON or XML, as the path's extension says."}}


XML_JSON = _xml_json(list[ServiceRequest])


def install_cors(app: FastAPI) -> None:
    """CORS for the Open311 paths, from ``ApiSettings.open311_cors_origins``."""
    app.add_middleware(PathCORS, prefix="/open311/",
                       origins=app.state.api_settings.open311_cors_origins)


def _fmt(fmt: str) -> str:
    if fmt.lower() not in FORMATS:
        raise NotFound(f"no format '{fmt}': use .json or .xml")
    return fmt.lower()


def _jurisdiction(request: Request, value: str | None) -> None:
    """A ``jurisdiction_id`` other than this service's is a 404 (the spec's answer)."""
    ours = request.app.state.api_settings.open311_jurisdiction
    if value not in (None, "", ours):
        raise NotFound(f"jurisdiction_id '{value}' not found (this endpoint serves '{ours}')")


def _iso(ts: datetime | None) -> str | None:
    return ts.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z") if ts else None


def _notice(duplicate_of: int | None) -> str:
    """The service_notice of a request, the same in the POST answer and in GET."""
    if duplicate_of:
        return f"已并入工单 {duplicate_of} (duplicate of request {duplicate_of})"
    return "已受理 received"


def _public(r: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    notes = f"{inc.STEPS_ZH[r['status']]} {r['status']}"
    if r["duplicate_of"]:
        notes = f"duplicate of request {r['duplicate_of']}"
    agencies = [names.get(code, code) for code in r["departments"] or []]
    return {
        "service_request_id": str(r["id"]),
        "status": OPEN311_STATUS[r["status"]],
        "status_notes": notes,
        "service_name": f"{r['category_name_zh']} {r['category_name_en']}",
        "service_code": r["category_code"],
        "description": r["description"],
        "agency_responsible": "、".join(agencies) or AGENCY,
        "service_notice": _notice(r["duplicate_of"]),
        "requested_datetime": _iso(r["reported_at"]),
        "updated_datetime": _iso(r["updated_at"]),
        "expected_datetime": _iso(r["resolve_due"]),
        "address": r["address"],
        "address_id": None,
        "zipcode": None,
        "lat": r["lat"],
        "long": r["lon"],
        "media_url": r["media_url"],
    }


def _date(value: str | None, field: str) -> datetime | None:
    if not value:
        return None
    try:
        d = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInput(f"{field} is not a W3C date-time",
                           [Problem(reason=f"'{value}' not ISO 8601", field=field)]) from exc
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def _number(q: Any, field: str, *, default: float | None = None, low: float = -math.inf,
            high: float = math.inf) -> float | None:
    raw = q.get(field)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and low <= value <= high):
        raise InvalidInput(f"bad {field}", [Problem(
            reason=f"'{raw}' is not a number between {low:g} and {high:g}", field=field)])
    return value


def _whole(q: Any, field: str, default: int) -> int:
    raw = q.get(field)
    if raw in (None, ""):
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
        raise InvalidInput(f"bad {field}", [Problem(reason=f"'{raw}' is not a whole number",
                                                    field=field)])
    return int(raw)


@router.get("/discovery.{fmt}", operation_id="open311_discovery",
            responses=_xml_json(Discovery),
            summary="GeoReport v2 discovery: the endpoint, its specification and formats")
def discovery(fmt: str, request: Request) -> Response:
    fmt = _fmt(fmt)
    s = request.app.state.api_settings
    return answer(fmt, "discovery", {
        "changeset": CHANGESET, "contact": s.open311_contact,
        "key_service": "api_key: an administrator issues one with the 'open311' scope "
                       "(POST /v1/api-keys)",
        "endpoints": [{"specification": SPEC, "url": f"{request.base_url}open311/v2",
                       "changeset": CHANGESET, "type": "production",
                       "formats": ["text/xml", "application/json"]}]})


@router.get("/v2/services.{fmt}", operation_id="open311_services",
            responses=_xml_json(list[Service]),
            summary="GeoReport v2 service list: the incident categories")
def services(fmt: str, request: Request) -> Response:
    fmt = _fmt(fmt)
    _jurisdiction(request, request.query_params.get("jurisdiction_id"))
    with request.app.state.engine.connect() as conn:
        cats = inc.categories(conn)
    return answer(fmt, "services", [
        {"service_code": c["code"], "service_name": f"{c['name_zh']} {c['name_en']}",
         "description": c["description"] or c["name_en"], "metadata": False,
         "type": "realtime", "keywords": c["name_zh"], "group": "incident"}
        for c in cats if c["active"]])


@router.get("/v2/services/{service_code}.{fmt}", operation_id="open311_service_definition",
            responses=_xml_json(ServiceDefinition),
            summary="GeoReport v2 service definition (no extra attributes: metadata is false)")
def service_definition(service_code: str, fmt: str, request: Request) -> Response:
    fmt = _fmt(fmt)
    _jurisdiction(request, request.query_params.get("jurisdiction_id"))
    with request.app.state.engine.connect() as conn:
        known = {c["code"] for c in inc.categories(conn) if c["active"]}
    if service_code not in known:
        raise NotFound(f"service_code '{service_code}' not found")
    return answer(fmt, "service_definition", {"service_code": service_code, "attributes": []})


@router.get("/v2/requests.{fmt}", operation_id="open311_requests", responses=XML_JSON,
            summary="GeoReport v2 requests, newest first: service_request_id, service_code, "
            "status, start_date, end_date (default the last 90 days), lat/long/radius (metres, "
            "default 1000), page (from 1) and page_size (1 to 1000, default 100); "
            "X-Total-Count and a Link header with the next/prev pages")
def requests(fmt: str, request: Request) -> Response:
    fmt = _fmt(fmt)
    q = request.query_params
    _jurisdiction(request, q.get("jurisdiction_id"))
    status = q.get("status")
    if status and any(s not in ("open", "closed") for s in status.split(",")):
        raise InvalidInput("status is open or closed", [Problem(reason=status, field="status")])
    statuses = None
    if status:
        want = set(status.split(","))
        statuses = [s for s, o in OPEN311_STATUS.items() if o in want]
    ids = None
    if q.get("service_request_id"):
        try:
            ids = [int(x) for x in q["service_request_id"].split(",")]
        except ValueError as exc:
            raise InvalidInput("service_request_id must be numbers",
                               [Problem(reason="not a number", field="service_request_id")]
                               ) from exc
    start, end = _date(q.get("start_date"), "start_date"), _date(q.get("end_date"), "end_date")
    if ids is None and start is None:  # the last 90 days before end (never before year 1)
        reference = end or datetime.now(UTC)
        start = (reference - timedelta(days=90) if reference > _EARLIEST + timedelta(days=90)
                 else _EARLIEST)
    codes = q["service_code"].split(",") if q.get("service_code") else None
    page, size = _whole(q, "page", 1), _whole(q, "page_size", 100)
    if page < 1:
        raise InvalidInput("bad page", [Problem(reason="pages count from 1", field="page")])
    check_page(size, 0, MAX_PAGE_SIZE, limit_field="page_size", offset_field="page")
    lat = _number(q, "lat", low=-90, high=90)
    lon = _number(q, "long", low=-180, high=180)
    if (lat is None) != (lon is None):
        raise InvalidInput("lat and long go together", [Problem(
            reason="give both, or neither", field="lat" if lat is None else "long")])
    radius = _number(q, "radius", default=1000.0, low=0, high=MAX_RADIUS_M)
    near = (lon, lat, radius) if lat is not None and lon is not None else None
    filters: dict[str, Any] = {"status": statuses, "category": codes, "ids": ids,
                               "start": start, "end": end, "near": near}
    if ids is not None:  # the spec: service_request_id overrides every other filter
        filters = {"ids": ids}
    with request.app.state.engine.connect() as conn:
        rows = inc.list_incidents(conn, **filters, limit=size, offset=(page - 1) * size)
        total = inc.count_incidents(conn, **filters)
        names = {d["code"]: d["name"] for d in inc.departments(conn)}
    links = page_links(request, (page - 1) * size, size, total,
                       lambda s: {"page": s // size + 1, "page_size": size})
    link = ", ".join(f'<{x["href"]}>; rel="{x["rel"]}"' for x in links)
    return answer(fmt, "service_requests", [_public(r, names) for r in rows],
                  headers={"X-Total-Count": str(total), "Link": link})


@router.get("/v2/requests/{request_id}.{fmt}", operation_id="open311_request",
            responses=XML_JSON, summary="GeoReport v2: one request (a list of one)")
def one_request(request_id: str, fmt: str, request: Request) -> Response:
    fmt = _fmt(fmt)
    _jurisdiction(request, request.query_params.get("jurisdiction_id"))
    if not (request_id.isascii() and request_id.isdigit()) or len(request_id) > 18:
        raise NotFound(f"no service request '{request_id}'")
    with request.app.state.engine.connect() as conn:
        rows = inc.list_incidents(conn, ids=[int(request_id)], limit=1)
        names = {d["code"]: d["name"] for d in inc.departments(conn)}
    if not rows:
        raise NotFound(f"no service request '{request_id}'")
    return answer(fmt, "service_requests", [_public(rows[0], names)])


async def _form(request: Request) -> dict[str, str]:
    """The POST's fields: a form (urlencoded or multipart), a JSON object, or a query string
    in the body; query parameters fill what the body leaves out."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        try:
            body = json.loads(await request.body() or b"{}")
        except (ValueError, RecursionError) as exc:
            raise InvalidInput("body is not JSON (or nested too deeply)",
                               [Problem(reason="unreadable JSON", field="body")]) from exc
        if not isinstance(body, dict):
            raise InvalidInput("body must be a JSON object",
                               [Problem(reason="not an object", field="body")])
        form = {k: str(v) for k, v in body.items() if v is not None}
    elif content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        # parsed once per request: the access policy may already have read api_key from it
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    else:
        raw = await request.body()
        form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
    for k, v in request.query_params.items():
        form.setdefault(k, v)
    return form


@router.post("/v2/requests.{fmt}", operation_id="open311_post_request", status_code=201,
             responses={201: _xml_json(list[CreatedRequest])[200]},
             summary="GeoReport v2: create a service request (form or JSON body): api_key, "
             "service_code, lat/long or an address_string of a known building, description, "
             "media_url, ...")
async def post_request(fmt: str, request: Request) -> Response:
    fmt = _fmt(fmt)
    form = await _form(request)
    check_form(form)
    _jurisdiction(request, form.get("jurisdiction_id"))
    key = form.get("api_key") or request.headers.get("x-api-key")
    if not key:
        raise Unauthenticated("api_key is required to create a service request")
    principal, _ = await verified_key(request, key, request.app.state.auth_settings)
    if "open311" not in principal.scopes:
        raise Forbidden("this api_key lacks the 'open311' scope")
    if not form.get("service_code"):
        raise InvalidInput("service_code is required",
                           [Problem(reason="required", field="service_code")])
    lat = _number(form, "lat", low=-90, high=90)
    lon = _number(form, "long", low=-180, high=180)
    address = form.get("address_string")
    if lat is None or lon is None:
        if lat is not None or lon is not None:
            raise InvalidInput("lat and long go together", [Problem(
                reason="give both, or an address_string", field="lat/long")])
        if not address:
            raise InvalidInput("a location is required", [Problem(
                reason="give lat and long, or the address_string of a known building",
                field="lat/long")])
        lon, lat = await anyio.to_thread.run_sync(_locate, request, address)
        crs = "wgs84"  # building locations are stored in EPSG:4326
    else:
        crs = form.get("crs", "wgs84")
    name = " ".join(x for x in (form.get("first_name"), form.get("last_name")) if x) or None
    contact = ", ".join(x for x in (form.get("email"), form.get("phone")) if x) or None
    res = await file_report(  # answered only after the commit
        request, category=form["service_code"], lon=lon, lat=lat, crs=crs,
        description=form.get("description"), address=address,
        actor=f"open311:{principal.name}", source="open311", reporter_name=name,
        reporter_contact=contact, reporter_device=form.get("device_id"),
        media_url=form.get("media_url") or None)
    return answer(fmt, "service_requests", [{"service_request_id": str(res.id),
                                             "service_notice": _notice(res.duplicate_of),
                                             "account_id": None}], status=201)


def _locate(request: Request, address: str) -> tuple[float, float]:
    with request.app.state.engine.connect() as conn:
        return inc.locate_address(conn, address)


@router.api_route("/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                  include_in_schema=False)
def unknown_path(rest: str, request: Request) -> Response:
    """Any other Open311 path: the spec's 404."""
    return error_answer(fmt_of(request.url.path), 404, [f"no Open311 path '/open311/{rest}'"])
