"""Open311 GeoReport v2 (JSON format): services, requests (GET with filters, POST), one request.

The categories are the services. Status is the spec's ``open``/``closed``: every step of the
six-step loop is ``open`` until the case is closed; a duplicate is ``closed`` with a note naming
the case it joined. Errors follow the spec: a JSON list of ``{"code", "description"}``. Output
carries no personal data (reporter name, e-mail, phone and device stay private).

Operation ids (for api/policy.py): open311_services, open311_requests, open311_post_request,
open311_request. POST needs an ``api_key`` with the ``open311`` scope.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection

from api.dependencies import CONNECTION, file_report
from api.errors import _status_for
from api.limits import check_form
from api.policy import PolicyRoute
from api.security import verified_key
from geo import incidents as inc
from geo.core.errors import Forbidden, InvalidInput, NotFound, Problem, Unauthenticated, WanggeError

router = APIRouter(prefix="/open311/v2", tags=["open311"], route_class=PolicyRoute)

OPEN311_STATUS = {s: ("closed" if s in ("closed", "duplicate") else "open")
                  for s in inc.STATUSES}
AGENCY = "网格化服务管理中心 Grid management centre"
_EARLIEST = datetime.min.replace(tzinfo=UTC)


class Service(BaseModel):
    """A GeoReport v2 service: one incident category."""

    service_code: str
    service_name: str
    description: str
    metadata: bool
    type: str
    keywords: str | None
    group: str


class ServiceRequest(BaseModel):
    """A GeoReport v2 service request (no personal data of the reporter)."""

    service_request_id: str
    status: str = Field(description="open or closed.")
    status_notes: str | None
    service_name: str
    service_code: str
    description: str | None
    agency_responsible: str | None
    service_notice: str | None
    requested_datetime: str | None = Field(description="W3C date-time, UTC.")
    updated_datetime: str | None
    expected_datetime: str | None
    address: str | None
    address_id: str | None
    zipcode: str | None
    lat: float
    long: float
    media_url: str | None


class CreatedRequest(BaseModel):
    service_request_id: str
    service_notice: str | None
    account_id: str | None


def _errors(status: int, descriptions: list[str]) -> JSONResponse:
    return JSONResponse([{"code": status, "description": d} for d in descriptions],
                        status_code=status)


def _spec_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn domain errors into the spec's error list."""
    import functools
    import inspect

    from starlette.concurrency import run_in_threadpool

    is_async = inspect.iscoroutinefunction(fn)

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            if is_async:
                return await fn(*args, **kwargs)
            return await run_in_threadpool(fn, *args, **kwargs)  # DB work off the event loop
        except WanggeError as exc:
            msgs = [f"{exc.message}: {p}" for p in exc.problems] or [exc.message]
            return _errors(_status_for(exc), msgs)

    return wrapper


def _iso(ts: datetime | None) -> str | None:
    return ts.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z") if ts else None


def _public(r: dict[str, Any], base: str) -> dict[str, Any]:
    notes = f"{inc.STEPS_ZH[r['status']]} {r['status']}"
    if r["duplicate_of"]:
        notes = f"duplicate of request {r['duplicate_of']}"
    return {
        "service_request_id": str(r["id"]),
        "status": OPEN311_STATUS[r["status"]],
        "status_notes": notes,
        "service_name": f"{r['category_name_zh']} {r['category_name_en']}",
        "service_code": r["category_code"],
        "description": r["description"],
        "agency_responsible": ", ".join(r["departments"] or []) or AGENCY,
        "service_notice": None,
        "requested_datetime": _iso(r["reported_at"]),
        "updated_datetime": _iso(r["updated_at"]),
        "expected_datetime": _iso(r["resolve_due"]),
        "address": r["address"],
        "address_id": None,
        "zipcode": None,
        "lat": r["lat"],
        "long": r["lon"],
        "media_url": (f"{base}v1/incidents/{r['id']}/photos/{r['photo_id']}"
                      if r.get("photo_id") else None),
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


@router.get("/services.json", operation_id="open311_services",
            summary="GeoReport v2 service list: the incident categories",
            response_model=list[Service])
@_spec_errors
def services(conn: Connection = CONNECTION) -> Any:
    cats = inc.categories(conn)
    return [{"service_code": c["code"], "service_name": f"{c['name_zh']} {c['name_en']}",
             "description": c["description"] or c["name_en"], "metadata": False,
             "type": "realtime", "keywords": c["name_zh"], "group": "incident"}
            for c in cats if c["active"]]


@router.get("/requests.json", operation_id="open311_requests",
            summary="GeoReport v2 requests: filter by service_request_id, service_code, status, "
            "start_date, end_date (default last 90 days, at most 1000)",
            response_model=list[ServiceRequest])
@_spec_errors
def requests(request: Request, conn: Connection = CONNECTION) -> Any:
    q = request.query_params
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
    if ids is None and start is None:
        reference = end or datetime.now(UTC)
        start = (reference - timedelta(days=90) if reference > _EARLIEST + timedelta(days=90)
                 else _EARLIEST)
    codes = q["service_code"].split(",") if q.get("service_code") else None
    rows = inc.list_incidents(conn, status=statuses, category=codes, ids=ids, start=start,
                              end=end, limit=1000)
    base = str(request.base_url)
    return [_public(r, base) for r in rows]


@router.get("/requests/{request_id}.json", operation_id="open311_request",
            summary="GeoReport v2: one request (a list of one)",
            response_model=list[ServiceRequest])
@_spec_errors
def one_request(request_id: str, request: Request, conn: Connection = CONNECTION) -> Any:
    if not request_id.isdigit():
        raise NotFound(f"no service request '{request_id}'")
    rows = inc.list_incidents(conn, ids=[int(request_id)], limit=1)
    if not rows:
        raise NotFound(f"no service request '{request_id}'")
    return [_public(rows[0], str(request.base_url))]


@router.post("/requests.json", operation_id="open311_post_request",
             summary="GeoReport v2: create a service request (form or JSON body; api_key, "
             "service_code, lat/long, description, ...)",
             response_model=list[CreatedRequest], status_code=201)
@_spec_errors
async def post_request(request: Request) -> Any:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        import json

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
    check_form(form)
    key = form.get("api_key") or request.headers.get("x-api-key")
    if not key:
        raise Unauthenticated("api_key is required to create a service request")
    return await _create(request, form, key)


async def _create(request: Request, form: dict[str, str], key: str) -> Any:
    principal, _ = await verified_key(request, key, request.app.state.auth_settings)
    if "open311" not in principal.scopes:
        raise Forbidden("this api_key lacks the 'open311' scope")
    problems = [Problem(reason="required", field=f)
                for f in ("service_code", "lat", "long") if not form.get(f)]
    if problems:
        raise InvalidInput("missing required fields", problems)
    try:
        lat, lon = float(form["lat"]), float(form["long"])
    except ValueError as exc:
        raise InvalidInput("lat/long must be decimal degrees",
                           [Problem(reason="not a number", field="lat/long")]) from exc
    name = " ".join(x for x in (form.get("first_name"), form.get("last_name")) if x) or None
    contact = ", ".join(x for x in (form.get("email"), form.get("phone")) if x) or None
    res = await file_report(  # answered only after the commit
        request, category=form["service_code"], lon=lon, lat=lat,
        crs=form.get("crs", "wgs84"), description=form.get("description"),
        address=form.get("address_string"), actor=f"open311:{principal.name}",
        source="open311", reporter_name=name, reporter_contact=contact,
        reporter_device=form.get("device_id"))
    notice = (f"已并入工单 {res.duplicate_of} (duplicate of request {res.duplicate_of})"
              if res.duplicate_of else "已受理 received")
    return JSONResponse([{"service_request_id": str(res.id), "service_notice": notice,
                          "account_id": None}], status_code=201)
