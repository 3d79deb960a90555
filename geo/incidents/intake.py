"""Intake: file a report (吹哨), locate it, route it, link duplicates.

A report is located with the in-process lookup (``geo.lookup.locate_point``); a report of the
same category within ``duplicate_radius_m`` metres (on the spheroid) of an open case reported in
the last ``duplicate_window_hours`` is stored as a duplicate linked to that case. Locations are
stored in EPSG:4326. Callers acknowledge a report only after its commit.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from geo.core.db import PreparedStatement
from geo.core.errors import (
    InvalidInput,
    Problem,
    WanggeError,
)
from geo.incidents.calendar import WorkCalendar
from geo.incidents.settings import IncidentSettings
from geo.lookup import locate_point

log = logging.getLogger(__name__)


@dataclass
class ReportResult:
    """What a report became: a new case, or a duplicate linked to an open one."""

    id: int
    status: str
    duplicate_of: int | None
    grid_code: str | None
    community_code: str | None
    street_code: str | None
    near_boundary: bool
    boundary_distance_m: float | None
    department_ids: list[int]
    checkin_due: datetime
    resolve_due: datetime


def _code(part: Any) -> str | None:
    if part is None:
        return None
    if isinstance(part, dict):
        return part.get("code")
    return getattr(part, "code", None)


# ---------------------------------------------------------------- intake


# The statements of filing reports, prepared once per connection (planning the insert took
# about as long as running it). First the locks that serialise duplicate checks per category
# and grid (so two concurrent twins do not both open a case), all of a batch in one statement
# and in lock-id order (so concurrent batches cannot deadlock). They come before any insert:
# under READ COMMITTED each later statement's snapshot then sees a twin committed meanwhile.
_REPORT_LOCKS = PreparedStatement(
    "wangge_report_locks",
    "SELECT count(pg_advisory_xact_lock(id)) FROM (SELECT DISTINCT hashtext(k) AS id"
    " FROM unnest(CAST(:keys AS text[])) AS k ORDER BY id) AS ordered")
# The categories of a batch with their SLAs and routing.
_REPORT_CATEGORIES = PreparedStatement(
    "wangge_report_categories",
    "SELECT c.code, c.checkin_workdays, c.resolve_workdays, c.active,"
    " ARRAY(SELECT department_id FROM category_department cd"
    "       WHERE cd.category_code = c.code ORDER BY department_id) AS deps"
    " FROM incident_category c WHERE c.code = ANY(CAST(:codes AS text[]))")
# The duplicate check, the case and its history rows. The open cases of the category within
# the radius come from the partial geography index alone (a MATERIALIZED fence; the cheap
# category test runs before the spheroid distance): left to itself, the planner ANDed in the
# reported_at index, whose last-hour range holds every report of a busy hour.
_REPORT = PreparedStatement("wangge_report", """
    WITH pt AS (SELECT ST_SetSRID(ST_MakePoint(:lon, :lat), 4326) AS g),
    near AS MATERIALIZED (
        SELECT i.id, i.reported_at, i.location::geography <-> pt.g::geography AS metres
        FROM incident i, pt
        WHERE i.is_open AND i.category_code = :c
          AND ST_DWithin(i.location::geography, pt.g::geography, :r)
    ),
    dup AS (
        SELECT id, reported_at FROM near WHERE reported_at >= :since ORDER BY metres LIMIT 1
    ),
    ins AS (
        INSERT INTO incident (category_code, description, address, location, input_crs,
            district_code, street_code, community_code, grid_code, boundary_distance_m,
            near_boundary, status, duplicate_of, department_ids, source, reporter_name,
            reporter_contact, reporter_device, reporter_user_id, reported_at, updated_at,
            checkin_due, amber_at, resolve_due, closed_at, media_url)
        SELECT :c, :d, :a, pt.g, :crs, :dc, :sc, :cc, :gc, :bd, :near,
            CASE WHEN dup.id IS NULL THEN 'reported' ELSE 'duplicate' END, dup.id,
            ARRAY(SELECT d.id FROM department d WHERE d.id = ANY(CAST(:deps AS integer[]))
                  AND (d.area_code IS NULL OR starts_with(CAST(:gc AS varchar), d.area_code))
                  ORDER BY d.id), :src, :rn, :rc, :rd, :uid, :now, :now, :cd, :amb, :rdue,
            CASE WHEN dup.id IS NULL THEN NULL ELSE CAST(:now AS timestamptz) END, :mu
        FROM pt LEFT JOIN dup ON true
        RETURNING id, reported_at, status, duplicate_of, department_ids
    ),
    h1 AS (
        INSERT INTO incident_history (incident_id, incident_reported_at, action, from_status,
            to_status, actor, note, detail, at)
        SELECT id, reported_at, 'report', NULL, status, :actor,
            CASE WHEN duplicate_of IS NULL THEN :d ELSE 'duplicate of #' || duplicate_of
            END, CAST(:detail AS jsonb), :now FROM ins
    ),
    h2 AS (
        INSERT INTO incident_history (incident_id, incident_reported_at, action, actor, note,
            detail, at)
        SELECT ins.duplicate_of, dup.reported_at, 'duplicate_linked', :actor,
            'report #' || ins.id || ' linked', jsonb_build_object('duplicate_id', ins.id), :now
        FROM ins JOIN dup ON dup.id = ins.duplicate_of
    )
    SELECT id, status, duplicate_of, department_ids FROM ins
""")


def report(
    conn: Connection,
    *,
    category: str,
    lon: float,
    lat: float,
    settings: IncidentSettings,
    crs: str = "wgs84",
    description: str | None = None,
    address: str | None = None,
    actor: str = "resident",
    source: str = "api",
    reporter_name: str | None = None,
    reporter_contact: str | None = None,
    reporter_device: str | None = None,
    reporter_user_id: int | None = None,
    media_url: str | None = None,
    now: datetime | None = None,
    locator: Callable[..., Any] | None = None,
) -> ReportResult:
    """File a report (吹哨) in the caller's transaction: locate, route, detect duplicates.

    ``lon``/``lat`` are in ``crs`` (wgs84|gcj02|bd09|cgcs2000). The point is located with
    ``geo.lookup.locate_point``; a report of the same category within
    ``duplicate_radius_m`` metres of an open case reported in the last
    ``duplicate_window_hours`` is stored as a duplicate linked to that case.
    ``reporter_user_id`` records the signed-in user who reported (a resident's "my reports");
    ``media_url`` a photo's URL (Open311), http(s) and at most 2048 characters.
    """
    if locator is None:
        found = locate_point(conn, lon, lat, crs=crs,
                             max_staleness_ms=settings.lookup_staleness_ms)
    else:  # a stand-in with locate_point's answer (tests of the workflow alone)
        found = locator(conn, lon, lat, crs=crs, at=None)
    args = {"category": category, "crs": crs, "description": description, "address": address,
            "actor": actor, "source": source, "reporter_name": reporter_name,
            "reporter_contact": reporter_contact, "reporter_device": reporter_device,
            "reporter_user_id": reporter_user_id, "media_url": media_url, "now": now}
    result = _file_located(conn, [(args, found)], settings)[0]
    if isinstance(result, Exception):
        raise result
    return result


def _lock_key(category: str, found: Any) -> str | None:
    """The advisory-lock key of a report, None when it cannot be filed (no grid)."""
    grid = _code(getattr(found, "grid", None))
    return f"incident:{category}:{grid}" if grid else None


def _file_located(conn: Connection, items: Sequence[tuple[Mapping[str, Any], Any]],
                  settings: IncidentSettings) -> list[ReportResult | WanggeError]:
    """File located reports (``report``'s arguments, ``locate_point``'s answer) in ``conn``'s
    transaction, in order: their locks and categories in one round trip each, then one insert
    statement per report. A report refused (no grid, unknown category, too long) writes
    nothing and gets its error in its place; database errors propagate."""
    keys = [_lock_key(args["category"], found) for args, found in items]
    if any(keys):
        # and one per grid of a batch: the roll-up's trigger (migration 0017) locks the grid's
        # row of the day, so batches take those in one order (no deadlock between them)
        grids = {f"rollup:{g}" for g in (_code(getattr(f, "grid", None)) for _, f in items)
                 if g} if len(items) > 1 else set()
        _REPORT_LOCKS.execute(conn, {"keys": sorted({k for k in keys if k} | grids)})
    cats = {r.code: r for r in _REPORT_CATEGORIES.execute(
        conn, {"codes": sorted({args["category"] for args, _ in items})})}
    out: list[ReportResult | WanggeError] = []
    for (args, found), key in zip(items, keys, strict=True):
        try:
            out.append(_insert_report(conn, args, found, key, cats.get(args["category"]),
                                      settings))
        except WanggeError as exc:
            out.append(exc)
    return out


_TEXT_FIELDS = ("category", "description", "address", "actor", "reporter_name",
                "reporter_contact", "reporter_device", "media_url")


def _insert_report(conn: Connection, args: Mapping[str, Any], found: Any, key: str | None,
                   cat: Any, settings: IncidentSettings) -> ReportResult:
    category, description = args["category"], args.get("description")
    if description is not None and len(description) > 10_000:
        raise InvalidInput("description too long",
                           [Problem(reason="at most 10000 characters", field="description")])
    for field in _TEXT_FIELDS:
        if "\x00" in str(args.get(field) or ""):
            raise InvalidInput(f"{field} holds a NUL character",
                               [Problem(reason="NUL (0x00) is not allowed in text", field=field)])
    media_url = args.get("media_url")
    if media_url is not None and (len(media_url) > 2048
                                  or not media_url.lower().startswith(("http://", "https://"))):
        raise InvalidInput("media_url is not a web address", [Problem(
            reason="an http(s) URL of at most 2048 characters", field="media_url")])
    if key is None:
        raise InvalidInput("the point lies in no grid",
                           [Problem(reason="outside every grid", field="lat/long")])
    grid = _code(found.grid)
    if cat is None or not cat.active:
        raise InvalidInput(f"unknown service/category '{category}'",
                           [Problem(reason="no such active category", field="category")])
    crs = args.get("crs", "wgs84")
    actor = args.get("actor", "resident")
    now = args.get("now") or datetime.now(UTC)
    cal = WorkCalendar(settings)
    checkin_due = cal.add(now, cat.checkin_workdays)
    resolve_due = cal.add(now, cat.resolve_workdays)
    amber_at = now + (resolve_due - now) * settings.amber_fraction
    bdist = getattr(found, "boundary_distance_m", None)
    near = bdist is not None and bdist < settings.near_boundary_m
    street = _code(getattr(found, "street", None))
    community = _code(getattr(found, "community", None))
    row = _REPORT.execute(
        conn,
        {"c": category, "d": description, "a": args.get("address"), "lon": found.lon,
         "lat": found.lat, "since": now - timedelta(hours=settings.duplicate_window_hours),
         "r": settings.duplicate_radius_m, "crs": crs,
         "dc": _code(getattr(found, "district", None)), "sc": street, "cc": community,
         "gc": grid, "bd": bdist, "near": near, "deps": list(cat.deps),
         "src": args.get("source", "api"), "rn": args.get("reporter_name"),
         "rc": args.get("reporter_contact"), "rd": args.get("reporter_device"),
         "uid": args.get("reporter_user_id"), "now": now, "cd": checkin_due, "amb": amber_at,
         "rdue": resolve_due, "actor": actor, "mu": media_url,
         "detail": json.dumps({"near_boundary": near, "crs": crs})},
    ).one()
    return ReportResult(row.id, row.status, row.duplicate_of, grid, community, street, near,
                        bdist, list(row.department_ids), checkin_due, resolve_due)


def file_reports(engine: Engine, reports: Sequence[Mapping[str, Any]], *,
                 settings: IncidentSettings) -> list[ReportResult | Exception]:
    """File many reports (each a mapping of ``report``'s arguments) with one commit.

    Each gets its ``ReportResult``, or the exception that refused it: a ``WanggeError`` (bad
    point, unknown category) means nothing of that report was written, and the others are
    filed. Results are returned only after the commit, so no report is acknowledged before it
    is durable. Twins in one batch see each other (one transaction, filed in input order).
    If anything else fails (a database error), nothing of the batch is kept and each report is
    filed in its own transaction, where the failure stays with the report that caused it. If
    the commit itself fails, each report that was to be filed gets that error (its outcome is
    unknown, and filing it again could file it twice).
    """
    if len(reports) == 1:
        return [_file_alone(engine, reports[0], settings)]
    out: list[ReportResult | Exception | None] = [None] * len(reports)
    items: list[tuple[int, dict[str, Any], Any]] = []
    for i, r in enumerate(reports):
        try:
            found = locate_point(engine, r["lon"], r["lat"], crs=r.get("crs", "wgs84"),
                                 max_staleness_ms=settings.lookup_staleness_ms)
        except WanggeError as exc:
            out[i] = exc
            continue
        items.append((i, {k: v for k, v in r.items() if k not in ("lon", "lat")}, found))
    with engine.connect() as conn:
        trans = conn.begin()
        try:
            filed = _file_located(conn, [(args, found) for _, args, found in items], settings)
        except Exception as exc:  # the batch is dropped; each is filed alone
            trans.rollback()
            log.warning("a batch of %d reports failed (%s); filing each alone", len(items),
                        str(exc).splitlines()[0][:200])
        else:
            outcome: list[ReportResult | Exception] = list(filed)
            try:
                trans.commit()
            except DBAPIError as exc:
                outcome = [r if isinstance(r, WanggeError) else exc for r in filed]
            for (i, _, _), result in zip(items, outcome, strict=True):
                out[i] = result
            return out  # type: ignore[return-value]
    return [_file_alone(engine, r, settings) for r in reports]


def _file_alone(engine: Engine, args: Mapping[str, Any],
                settings: IncidentSettings) -> ReportResult | Exception:
    try:
        with engine.begin() as conn:
            return report(conn, **args, settings=settings)
    except Exception as exc:  # handed to the caller of this report only
        return exc
