"""Incidents: report, route to the grid, and the six-step loop (六步接办) to the resident's rating.

吹哨 reported → 报到 checked_in → 会商 consulting → 落实 in_progress → 反馈 feedback
→ 评价 rated → closed. Every change is one transaction: the case row and its append-only history
row are written together or not at all, and callers acknowledge only after commit.

Times are timestamptz (UTC in Python). SLAs count working days (weekends and the holidays in
``IncidentSettings.holidays`` are off) in the local time zone ``IncidentSettings.timezone``.
Locations are stored in EPSG:4326; distances (duplicates) are measured on the spheroid
(geography), in metres.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import Field
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from geo.auth.service import EVERYTHING, Scope, code_prefix_sql
from geo.core.db import PreparedStatement
from geo.core.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    Problem,
    WanggeError,
)
from geo.core.settings import WanggeSettings
from geo.lookup.service import locate_point

log = logging.getLogger(__name__)

STEPS_ZH = {
    "reported": "吹哨",
    "checked_in": "报到",
    "consulting": "会商",
    "in_progress": "落实",
    "feedback": "反馈",
    "rated": "评价",
    "closed": "办结",
    "duplicate": "重复",
}
STATUSES = tuple(STEPS_ZH)

# The explicit transition table: (from, to) -> action name. Nothing else is allowed.
TRANSITIONS: dict[tuple[str, str], str] = {
    ("reported", "checked_in"): "check_in",
    ("checked_in", "consulting"): "consult",
    ("consulting", "in_progress"): "carry_out",
    ("in_progress", "feedback"): "feed_back",
    ("feedback", "rated"): "rate",
    ("rated", "closed"): "close",
    ("rated", "in_progress"): "reopen",
}
# The timestamp column stamped when a case enters a status.
STAMP = {
    "checked_in": "checked_in_at",
    "consulting": "consulting_at",
    "in_progress": "in_progress_at",
    "feedback": "feedback_at",
    "rated": "rated_at",
    "closed": "closed_at",
}
REROUTABLE = frozenset({"reported", "checked_in", "consulting"})
ESCALATION = ("grid", "street", "district")


class IncidentSettings(WanggeSettings):
    """Incident intake, duplicates, SLA calendar, photos."""

    duplicate_radius_m: float = Field(
        default=50.0, description="A report this close (metres) to an open case of the same "
        "category is linked to it as a duplicate."
    )
    duplicate_window_hours: float = Field(
        default=72.0, description="Only open cases reported within this many hours count as "
        "duplicates."
    )
    near_boundary_m: float = Field(
        default=5.0, description="Reports closer than this (metres) to a grid boundary are "
        "flagged for the grid worker to confirm."
    )
    holidays: list[date] = Field(
        default_factory=list, description="Non-working dates (ISO, JSON list) besides weekends."
    )
    workdays_off_weekend: bool = Field(
        default=True, description="Saturdays and Sundays are not working days."
    )
    timezone: str = Field(default="Asia/Shanghai", description="Time zone of the SLA calendar.")
    amber_fraction: float = Field(
        default=0.8, description="Share of the resolution time after which a case is amber."
    )
    poor_rating_max: int = Field(
        default=2, description="Ratings (1-5) at or below this are poor: the case may reopen."
    )
    photo_max_bytes: int = Field(
        default=5 * 1024 * 1024, description="Largest photo accepted (bytes); more is refused."
    )
    lookup_staleness_ms: float = Field(
        default=500, description="A report is located with the in-process lookup index, "
        "checked against the database for a new generation at most this often (ms); a change "
        "made in the same process is seen at once."
    )
    report_writers: int = Field(
        default=2, ge=1, description="Writer threads filing reports in the HTTP service (each "
        "holds one pooled connection while it files a batch)."
    )
    report_batch_max: int = Field(
        default=32, ge=1, description="At most this many waiting reports are filed in one "
        "transaction."
    )


# ---------------------------------------------------------------- working-day calendar


class WorkCalendar:
    """Working days: not weekends (if configured), not holidays. Counts whole 24 h days."""

    def __init__(self, settings: IncidentSettings) -> None:
        self.tz = ZoneInfo(settings.timezone)
        self.holidays = frozenset(settings.holidays)
        self.weekends = settings.workdays_off_weekend

    def is_workday(self, d: date) -> bool:
        return d not in self.holidays and not (self.weekends and d.weekday() >= 5)

    def add(self, start: datetime, workdays: float) -> datetime:
        """The instant ``workdays`` working days after ``start`` (aware datetime, UTC out)."""
        t = start.astimezone(self.tz)
        remaining = timedelta(days=float(workdays))
        for _ in range(3660):
            midnight = datetime.combine(t.date() + timedelta(days=1), datetime.min.time(),
                                        tzinfo=self.tz)
            if self.is_workday(t.date()):
                avail = midnight - t
                if remaining <= avail:
                    return (t + remaining).astimezone(UTC)
                remaining -= avail
            t = midnight
        raise InvalidInput("working-day calendar: no working day within ten years")


# ---------------------------------------------------------------- results


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


def _category(conn: Connection, code: str) -> Any:
    row = conn.execute(
        text("SELECT code, name_zh, name_en, checkin_workdays, resolve_workdays, active,"
             " ARRAY(SELECT department_id FROM category_department cd"
             "       WHERE cd.category_code = c.code ORDER BY department_id) AS deps"
             " FROM incident_category c WHERE code = :c"),
        {"c": code},
    ).first()
    if row is None or not row.active:
        raise InvalidInput(f"unknown service/category '{code}'",
                           [Problem(reason="no such active category", field="category")])
    return row


def _scope_where(scope: Scope, params: dict[str, Any]) -> list[str]:
    """SQL conditions (on alias ``i``) for the rows ``scope`` reaches; binds into ``params``.

    An area is a grid-code range (btree on grid_code), a department the array containment the
    GIN index on ``department_ids`` serves, a reporter the partial index of migration 0007.
    """
    where = []
    if scope.area is not None:
        where.append(code_prefix_sql("i.grid_code", scope.area, params, "scope"))
    if scope.department_id is not None:
        where.append("i.department_ids @> ARRAY[CAST(:scope_dep AS integer)]")
        params["scope_dep"] = scope.department_id
    if scope.reporter_user_id is not None:
        where.append("i.reporter_user_id = :scope_uid")
        params["scope_uid"] = scope.reporter_user_id
    return where


def _in_scope(conn: Connection, incident_id: int, scope: Scope, *, lock: bool = False) -> Any:
    """The case row (id, status, rating, ...) if ``scope`` reaches it; else NotFound/Forbidden.

    One query: the row and whether the scope holds it, so a case outside the scope is told
    apart from a missing one (and ``FOR UPDATE`` locks it when ``lock``).
    """
    params: dict[str, Any] = {"i": incident_id}
    inside = " AND ".join(_scope_where(scope, params)) or "true"
    row = conn.execute(
        text("SELECT id, status, rating, escalation_level, department_ids, category_code,"
             f" reported_at, ({inside}) AS in_scope FROM incident i WHERE id = :i"
             + (" FOR UPDATE" if lock else "")),
        params,
    ).first()
    if row is None or (not row.in_scope and scope.hides):
        raise NotFound(f"incident {incident_id} does not exist")
    if not row.in_scope:
        raise Forbidden(f"incident {incident_id} lies outside your scope",
                        [Problem(reason="not in your area, department or reports", field="id")])
    return row


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
        SELECT id FROM near WHERE reported_at >= :since ORDER BY metres LIMIT 1
    ),
    ins AS (
        INSERT INTO incident (category_code, description, address, location, input_crs,
            district_code, street_code, community_code, grid_code, boundary_distance_m,
            near_boundary, status, duplicate_of, department_ids, source, reporter_name,
            reporter_contact, reporter_device, reporter_user_id, reported_at, updated_at,
            checkin_due, amber_at, resolve_due, closed_at)
        SELECT :c, :d, :a, pt.g, :crs, :dc, :sc, :cc, :gc, :bd, :near,
            CASE WHEN dup.id IS NULL THEN 'reported' ELSE 'duplicate' END, dup.id,
            :deps, :src, :rn, :rc, :rd, :uid, :now, :now, :cd, :amb, :rdue,
            CASE WHEN dup.id IS NULL THEN NULL ELSE CAST(:now AS timestamptz) END
        FROM pt LEFT JOIN dup ON true
        RETURNING id, status, duplicate_of
    ),
    h1 AS (
        INSERT INTO incident_history (incident_id, action, from_status, to_status,
            actor, note, detail, at)
        SELECT id, 'report', NULL, status, :actor,
            CASE WHEN duplicate_of IS NULL THEN :d ELSE 'duplicate of #' || duplicate_of
            END, CAST(:detail AS jsonb), :now FROM ins
    ),
    h2 AS (
        INSERT INTO incident_history (incident_id, action, actor, note, detail, at)
        SELECT duplicate_of, 'duplicate_linked', :actor, 'report #' || id || ' linked',
            jsonb_build_object('duplicate_id', id), :now
        FROM ins WHERE duplicate_of IS NOT NULL
    )
    SELECT id, status, duplicate_of FROM ins
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
    now: datetime | None = None,
    locator: Callable[..., Any] | None = None,
) -> ReportResult:
    """File a report (吹哨) in the caller's transaction: locate, route, detect duplicates.

    ``lon``/``lat`` are in ``crs`` (wgs84|gcj02|bd09|cgcs2000). The point is located with
    ``geo.lookup.service.locate_point``; a report of the same category within
    ``duplicate_radius_m`` metres of an open case reported in the last
    ``duplicate_window_hours`` is stored as a duplicate linked to that case.
    ``reporter_user_id`` records the signed-in user who reported (a resident's "my reports").
    """
    if locator is None:
        found = locate_point(conn, lon, lat, crs=crs,
                             max_staleness_ms=settings.lookup_staleness_ms)
    else:  # a stand-in with locate_point's answer (tests of the workflow alone)
        found = locator(conn, lon, lat, crs=crs, at=None)
    args = {"category": category, "crs": crs, "description": description, "address": address,
            "actor": actor, "source": source, "reporter_name": reporter_name,
            "reporter_contact": reporter_contact, "reporter_device": reporter_device,
            "reporter_user_id": reporter_user_id, "now": now}
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
        _REPORT_LOCKS.execute(conn, {"keys": sorted({k for k in keys if k})})
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
                "reporter_contact", "reporter_device")


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
         "rdue": resolve_due, "actor": actor,
         "detail": json.dumps({"near_boundary": near, "crs": crs})},
    ).one()
    return ReportResult(row.id, row.status, row.duplicate_of, grid, community, street, near,
                        bdist, list(cat.deps), checkin_due, resolve_due)


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
        except Exception as exc:  # noqa: BLE001 - the batch is dropped; each is filed alone
            trans.rollback()
            log.warning("a batch of %d reports failed (%s); filing each alone", len(items),
                        str(exc).splitlines()[0][:200])
        else:
            try:
                trans.commit()
            except DBAPIError as exc:
                filed = [r if isinstance(r, WanggeError) else exc for r in filed]
            for (i, _, _), result in zip(items, filed, strict=True):
                out[i] = result
            return out  # type: ignore[return-value]
    return [_file_alone(engine, r, settings) for r in reports]


def _file_alone(engine: Engine, args: Mapping[str, Any],
                settings: IncidentSettings) -> ReportResult | Exception:
    try:
        with engine.begin() as conn:
            return report(conn, **args, settings=settings)
    except Exception as exc:  # noqa: BLE001 - handed to the caller of this report only
        return exc


class ReportWriter:
    """Files reports submitted from many threads or requests in shared transactions.

    ``threads`` writer threads each take every report waiting (up to ``max_batch``) and file
    them together (``file_reports``): under load, one commit and one pooled connection serve
    many reports; alone, a report is filed at once. ``submit`` returns a Future resolved after
    the commit.
    """

    def __init__(self, engine: Engine, settings: IncidentSettings, *, threads: int = 4,
                 max_batch: int = 32) -> None:
        self.engine, self.settings, self.max_batch = engine, settings, max_batch
        self._queue: queue.SimpleQueue[tuple[dict[str, Any], Future] | None] = \
            queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._run, name=f"report-writer-{i}",
                                          daemon=True) for i in range(threads)]
        for t in self._threads:
            t.start()

    def submit(self, **report_args: Any) -> Future:
        """Queue one report (``report``'s keyword arguments, without conn and settings)."""
        future: Future = Future()
        self._queue.put((report_args, future))
        return future

    def close(self) -> None:
        """Stop the writer threads once the queued reports are filed."""
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(timeout=30)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # leave the stop signal for this thread's next turn
                    break
                batch.append(more)
            # A caller that gave up before its report was taken (cancelled) is not filed: it
            # was never acknowledged. From here on, a future can no longer be cancelled.
            batch = [(args, f) for args, f in batch if f.set_running_or_notify_cancel()]
            if not batch:
                continue
            try:
                results = file_reports(self.engine, [args for args, _ in batch],
                                       settings=self.settings)
            except Exception as exc:  # noqa: BLE001 - every waiting caller must hear of it
                results = [exc] * len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)


def _history(conn: Connection, incident_id: int, action: str, from_status: str | None,
             to_status: str | None, actor: str, note: str | None,
             detail: dict[str, Any] | None = None, at: datetime | None = None) -> int:
    return conn.execute(
        text("INSERT INTO incident_history (incident_id, action, from_status, to_status, actor,"
             " note, detail, at) VALUES (:i, :a, :f, :t, :ac, :n, CAST(:d AS jsonb),"
             " coalesce(:at, clock_timestamp())) RETURNING id"),
        {"i": incident_id, "a": action, "f": from_status, "t": to_status, "ac": actor,
         "n": note, "d": json.dumps(detail or {}, default=str), "at": at},
    ).scalar_one()


def _lock(conn: Connection, incident_id: int, scope: Scope = EVERYTHING) -> Any:
    """Lock the case row for a change; refuse a case outside ``scope``."""
    return _in_scope(conn, incident_id, scope, lock=True)


# ---------------------------------------------------------------- the state machine


def transition(
    conn: Connection,
    incident_id: int,
    to_status: str,
    *,
    actor: str,
    note: str | None = None,
    rating: int | None = None,
    settings: IncidentSettings,
    now: datetime | None = None,
    scope: Scope = EVERYTHING,
) -> dict[str, Any]:
    """Move a case along the six-step loop; refuse anything not in ``TRANSITIONS`` (Conflict).

    ``rating`` (1-5) is required to enter ``rated``. Reopening (rated → in_progress) is allowed
    only after a poor rating (≤ ``poor_rating_max``). A case outside ``scope`` is refused.
    Returns the history entry.
    """
    if to_status not in STATUSES:
        raise InvalidInput(f"unknown status '{to_status}'",
                           [Problem(reason=f"one of {', '.join(STATUSES)}", field="to")])
    if not actor:
        raise InvalidInput("an actor is required", [Problem(reason="empty", field="actor")])
    case = _lock(conn, incident_id, scope)
    action = TRANSITIONS.get((case.status, to_status))
    if action is None:
        allowed = [t for (f, t) in TRANSITIONS if f == case.status]
        raise Conflict(
            f"illegal transition {case.status} → {to_status} for incident {incident_id}",
            [Problem(reason=f"from '{case.status}' ({STEPS_ZH[case.status]}) the case may go "
                     f"to: {', '.join(allowed) or 'nowhere'}", field="to",
                     detail={"from": case.status, "to": to_status, "allowed": allowed})],
        )
    sets = {"status": to_status}
    if action == "rate":
        if rating is None or not 1 <= int(rating) <= 5:
            raise InvalidInput("a rating 1-5 is required to rate",
                               [Problem(reason="integer 1-5", field="rating")])
        sets["rating"] = int(rating)
    if action == "reopen" and (case.rating or 0) > settings.poor_rating_max:
        raise Conflict(
            f"incident {incident_id} was rated {case.rating}: only a poor rating "
            f"(≤ {settings.poor_rating_max}) reopens a case",
            [Problem(reason="rating not poor", field="to", detail={"rating": case.rating})],
        )
    now = now or datetime.now(UTC)
    entry = _history(conn, incident_id, action, case.status, to_status, actor, note,
                     {"rating": rating} if rating is not None else {}, now)
    assign = ", ".join(f"{k} = :{k}" for k in sets)
    stamp = STAMP.get(to_status)
    extra = f", {stamp} = :now" if stamp else ""
    if action == "reopen":
        extra += ", reopen_count = reopen_count + 1, rating = NULL, feedback_at = NULL,"
        extra += " rated_at = NULL"
    _apply_update(conn, f"UPDATE incident SET {assign}{extra}, updated_at = :now WHERE id = :id",
                  {**sets, "now": now, "id": incident_id})
    return {"history_id": entry, "incident_id": incident_id, "action": action,
            "from": case.status, "to": to_status, "at": now}


def _apply_update(conn: Connection, sql: str, params: dict[str, Any]) -> None:
    """The case-row update of a transition (a seam for failure-injection tests)."""
    conn.execute(text(sql), params)


def reroute(conn: Connection, incident_id: int, department_codes: Iterable[str], *,
            actor: str, note: str | None = None, settings: IncidentSettings,
            now: datetime | None = None, scope: Scope = EVERYTHING) -> dict[str, Any]:
    """Send a case to other departments: back to 吹哨 with a fresh check-in deadline."""
    case = _lock(conn, incident_id, scope)
    if case.status not in REROUTABLE:
        raise Conflict(f"incident {incident_id} is '{case.status}': only cases in "
                       f"{', '.join(sorted(REROUTABLE))} can be re-routed",
                       [Problem(reason="not re-routable now", field="departments")])
    ids = _department_ids(conn, department_codes)
    now = now or datetime.now(UTC)
    cat = _category(conn, case.category_code)
    due = WorkCalendar(settings).add(now, cat.checkin_workdays)
    entry = _history(conn, incident_id, "reroute", case.status, "reported", actor, note,
                     {"from_departments": list(case.department_ids), "to_departments": ids},
                     now)
    conn.execute(
        text("UPDATE incident SET department_ids = :d, status = 'reported', checkin_due = :due,"
             " checked_in_at = NULL, consulting_at = NULL, updated_at = :now WHERE id = :i"),
        {"d": ids, "due": due, "now": now, "i": incident_id},
    )
    return {"history_id": entry, "incident_id": incident_id, "departments": ids}


def _department_ids(conn: Connection, codes: Iterable[str]) -> list[int]:
    codes = list(codes)
    if not codes:
        raise InvalidInput("no departments given", [Problem(reason="empty",
                                                            field="departments")])
    rows = conn.execute(text("SELECT code, id FROM department WHERE code = ANY(:c)"),
                        {"c": codes}).all()
    known = {r.code: r.id for r in rows}
    missing = [c for c in codes if c not in known]
    if missing:
        raise InvalidInput("unknown departments",
                           [Problem(reason=f"no department '{c}'", field="departments")
                            for c in missing])
    return sorted(known[c] for c in codes)


def urge(conn: Connection, incident_id: int, *, actor: str, note: str | None = None,
         now: datetime | None = None, scope: Scope = EVERYTHING) -> dict[str, Any]:
    """督办: the command centre urges and supervises an open case (recorded in history)."""
    case = _lock(conn, incident_id, scope)
    if case.status in ("closed", "duplicate"):
        raise Conflict(f"incident {incident_id} is {case.status}: nothing to urge",
                       [Problem(reason="case not open", field="id")])
    now = now or datetime.now(UTC)
    entry = _history(conn, incident_id, "urge", case.status, case.status, actor, note, {}, now)
    conn.execute(text("UPDATE incident SET urge_count = urge_count + 1, updated_at = :n"
                      " WHERE id = :i"), {"n": now, "i": incident_id})
    return {"history_id": entry, "incident_id": incident_id, "action": "urge"}


def escalate_overdue(conn: Connection, *, settings: IncidentSettings,
                     now: datetime | None = None, actor: str = "system",
                     scope: Scope = EVERYTHING) -> list[dict[str, Any]]:
    """Escalate grid → street → district every case (within ``scope``) no department checked
    in to in time.

    Each escalation restarts the check-in clock and is written to the history. Returns the
    escalations made.
    """
    now = now or datetime.now(UTC)
    params: dict[str, Any] = {"n": now}
    where = " ".join(f"AND {w}" for w in _scope_where(scope, params))
    rows = conn.execute(
        text("SELECT i.id, i.escalation_level, c.checkin_workdays FROM incident i"
             " JOIN incident_category c ON c.code = i.category_code"
             " WHERE i.status = 'reported' AND i.checkin_due < :n"
             f" AND i.escalation_level <> 'district' {where} ORDER BY i.checkin_due"
             " FOR UPDATE OF i SKIP LOCKED"),
        params,
    ).all()
    cal = WorkCalendar(settings)
    out = []
    for r in rows:
        new = ESCALATION[ESCALATION.index(r.escalation_level) + 1]
        due = cal.add(now, r.checkin_workdays)
        _history(conn, r.id, "escalate", "reported", "reported", actor,
                 f"no check-in within SLA: {r.escalation_level} → {new}",
                 {"from_level": r.escalation_level, "to_level": new}, now)
        conn.execute(text("UPDATE incident SET escalation_level = :l, checkin_due = :d,"
                          " updated_at = :n WHERE id = :i"),
                     {"l": new, "d": due, "n": now, "i": r.id})
        out.append({"incident_id": r.id, "from": r.escalation_level, "to": new,
                    "checkin_due": due})
    return out


# ---------------------------------------------------------------- photos


def attach_photo(conn: Connection, incident_id: int, data: bytes, content_type: str, *,
                 settings: IncidentSettings, history_id: int | None = None,
                 scope: Scope = EVERYTHING) -> int:
    """Store a photo (bytes) for a case, optionally for one history step (e.g. 反馈)."""
    if len(data) > settings.photo_max_bytes:
        raise PayloadTooLarge(
            f"photo of {len(data)} bytes exceeds the limit of {settings.photo_max_bytes}",
            [Problem(reason="too large", field="photo",
                     detail={"limit": settings.photo_max_bytes})])
    if not data:
        raise InvalidInput("empty photo", [Problem(reason="no bytes", field="photo")])
    if not content_type.startswith("image/"):
        raise InvalidInput("a photo must be an image",
                           [Problem(reason=f"content type {content_type}", field="photo")])
    _lock(conn, incident_id, scope)
    if history_id is not None:
        ok = conn.execute(text("SELECT 1 FROM incident_history WHERE id = :h AND"
                               " incident_id = :i"), {"h": history_id, "i": incident_id}).first()
        if not ok:
            raise NotFound(f"history entry {history_id} is not part of incident {incident_id}")
    return conn.execute(
        text("INSERT INTO incident_photo (incident_id, history_id, content_type, size_bytes,"
             " data) VALUES (:i, :h, :ct, :s, :d) RETURNING id"),
        {"i": incident_id, "h": history_id, "ct": content_type, "s": len(data), "d": data},
    ).scalar_one()


def get_photo(conn: Connection, incident_id: int, photo_id: int, *,
              scope: Scope = EVERYTHING) -> tuple[bytes, str]:
    """A photo's bytes and content type; refused for a case outside ``scope``."""
    _in_scope(conn, incident_id, scope)
    row = conn.execute(text("SELECT data, content_type FROM incident_photo WHERE id = :p"
                            " AND incident_id = :i"), {"p": photo_id, "i": incident_id}).first()
    if row is None:
        raise NotFound(f"photo {photo_id} of incident {incident_id} does not exist")
    return bytes(row.data), row.content_type


# ---------------------------------------------------------------- reading


_PUBLIC_COLS = """
    i.id, i.category_code, c.name_zh AS category_name_zh, c.name_en AS category_name_en,
    i.description, i.address, ST_X(i.location) AS lon, ST_Y(i.location) AS lat,
    i.district_code, i.street_code, i.community_code, i.grid_code, i.boundary_distance_m,
    i.near_boundary, i.status, i.duplicate_of, i.department_ids, i.escalation_level, i.source,
    i.rating, i.reopen_count, i.urge_count, i.reported_at, i.updated_at, i.checkin_due,
    i.amber_at, i.resolve_due, i.checked_in_at, i.consulting_at, i.in_progress_at,
    i.feedback_at, i.rated_at, i.closed_at,
    CASE WHEN NOT i.is_open THEN 'none'
         WHEN :now >= i.resolve_due THEN 'red'
         WHEN :now >= i.amber_at THEN 'amber' ELSE 'green' END AS sla,
    (SELECT array_agg(d.code ORDER BY d.code) FROM department d
      WHERE d.id = ANY(i.department_ids)) AS departments
"""


def get(conn: Connection, incident_id: int, *, history: bool = True,
        now: datetime | None = None, scope: Scope = EVERYTHING) -> dict[str, Any]:
    """One case (no personal data of the reporter) with its history and photo list; refused
    (403, or 404 for a reporter's scope) when outside ``scope``."""
    if not scope.everything:
        _in_scope(conn, incident_id, scope)
    row = conn.execute(
        text(f"SELECT {_PUBLIC_COLS} FROM incident i JOIN incident_category c"
             " ON c.code = i.category_code WHERE i.id = :i"),
        {"i": incident_id, "now": now or datetime.now(UTC)},
    ).mappings().first()
    if row is None:
        raise NotFound(f"incident {incident_id} does not exist")
    out = dict(row)
    if history:
        out["history"] = [dict(r) for r in conn.execute(
            text("SELECT id, action, from_status, to_status, actor, note, detail, at"
                 " FROM incident_history WHERE incident_id = :i ORDER BY id"),
            {"i": incident_id}).mappings()]
        out["photos"] = [dict(r) for r in conn.execute(
            text("SELECT id, history_id, content_type, size_bytes, created_at"
                 " FROM incident_photo WHERE incident_id = :i ORDER BY id"),
            {"i": incident_id}).mappings()]
    return out


def _place_time_where(where: list[str], params: dict[str, Any], *, street: str | None = None,
                      grid: str | None = None, start: datetime | None = None,
                      end: datetime | None = None) -> None:
    """Append the street / grid / reported-between conditions that are given, binding values."""
    for value, name, sql in ((street, "street", "i.street_code = :street"),
                             (grid, "grid", "i.grid_code = :grid"),
                             (start, "start", "i.reported_at >= :start"),
                             (end, "end", "i.reported_at <= :end")):
        if value:
            where.append(sql)
            params[name] = value


def list_incidents(
    conn: Connection, *, status: Iterable[str] | None = None, category: Iterable[str] | None
    = None, street: str | None = None, grid: str | None = None, ids: Iterable[int] | None = None,
    start: datetime | None = None, end: datetime | None = None, limit: int = 1000,
    now: datetime | None = None, scope: Scope = EVERYTHING,
) -> list[dict[str, Any]]:
    """Cases matching the filters and within ``scope``, newest first (public fields only)."""
    params: dict[str, Any] = {"now": now or datetime.now(UTC), "lim": min(int(limit), 10_000)}
    where = ["true", *_scope_where(scope, params)]
    if status:
        where.append("i.status = ANY(:status)")
        params["status"] = list(status)
    if category:
        where.append("i.category_code = ANY(:cat)")
        params["cat"] = list(category)
    _place_time_where(where, params, street=street, grid=grid, start=start, end=end)
    if ids is not None:
        where.append("i.id = ANY(:ids)")
        params["ids"] = list(ids)
    sql = (f"SELECT {_PUBLIC_COLS} FROM incident i JOIN incident_category c"
           f" ON c.code = i.category_code WHERE {' AND '.join(where)}"
           " ORDER BY i.reported_at DESC, i.id DESC LIMIT :lim")
    return [dict(r) for r in conn.execute(text(sql), params).mappings()]


def overdue(conn: Connection, *, street: str | None = None, grid: str | None = None,
            department: str | None = None, level: str = "red", now: datetime | None = None,
            limit: int = 1000, scope: Scope = EVERYTHING) -> list[dict[str, Any]]:
    """Open cases past their resolution deadline (``level='red'``) or past 80 % (``'amber'``),
    for one street, grid or department, within ``scope``; earliest due first. Uses the partial
    open-case index."""
    if level not in ("red", "amber"):
        raise InvalidInput("level is red or amber", [Problem(reason="unknown", field="level")])
    col = "resolve_due" if level == "red" else "amber_at"
    params: dict[str, Any] = {"now": now or datetime.now(UTC), "lim": int(limit)}
    where = ["i.is_open", f"i.{col} <= :now", *_scope_where(scope, params)]
    _place_time_where(where, params, street=street, grid=grid)
    if department:
        where.append("i.department_ids @> ARRAY[(SELECT id FROM department WHERE code = :dep)]")
        params["dep"] = department
    sql = (f"SELECT i.id, i.category_code, i.status, i.street_code, i.grid_code,"
           f" i.department_ids, i.reported_at, i.resolve_due, i.amber_at, i.escalation_level,"
           f" i.urge_count, ST_X(i.location) AS lon, ST_Y(i.location) AS lat,"
           f" CASE WHEN :now >= i.resolve_due THEN 'red' ELSE 'amber' END AS sla"
           f" FROM incident i WHERE {' AND '.join(where)} ORDER BY i.resolve_due LIMIT :lim")
    return [dict(r) for r in conn.execute(text(sql), params).mappings()]


# ---------------------------------------------------------------- statistics

_STEP_MEDIANS = """
    count(*) AS incidents,
    count(*) FILTER (WHERE i.is_open) AS open,
    count(*) FILTER (WHERE i.status = 'closed') AS closed,
    count(*) FILTER (WHERE i.status = 'duplicate') AS duplicates,
    count(*) FILTER (WHERE i.is_open AND i.resolve_due <= :now) AS overdue,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY date_part('epoch', i.checked_in_at - i.reported_at)
        / 3600) AS median_checkin_h,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY date_part('epoch', i.consulting_at -
        i.checked_in_at) / 3600) AS median_consult_h,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY date_part('epoch', i.in_progress_at -
        i.consulting_at) / 3600) AS median_carry_out_h,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY date_part('epoch', i.feedback_at -
        i.in_progress_at) / 3600) AS median_feedback_h,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY date_part('epoch', i.rated_at - i.feedback_at)
        / 3600) AS median_rating_h,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY date_part('epoch', i.closed_at - i.reported_at)
        / 3600) FILTER (WHERE i.status = 'closed') AS median_total_h,
    avg(i.rating)::float AS satisfaction_mean,
    (count(*) FILTER (WHERE i.rating >= 4))::float / nullif(count(i.rating), 0)
        AS satisfied_share
"""
LEVEL_COLUMN = {"grid": "grid_code", "community": "community_code", "street": "street_code"}


def stats(conn: Connection, *, by: str = "grid", street: str | None = None,
          start: datetime | None = None, end: datetime | None = None,
          now: datetime | None = None, scope: Scope = EVERYTHING) -> list[dict[str, Any]]:
    """Counts, median hours per step and satisfaction per grid/community/street/department,
    for cases reported in [start, end] (optionally within one street) and within ``scope``."""
    if by not in (*LEVEL_COLUMN, "department"):
        raise InvalidInput("by is grid, community, street or department",
                           [Problem(reason=f"unknown '{by}'", field="by")])
    params: dict[str, Any] = {"now": now or datetime.now(UTC)}
    where = ["true", *_scope_where(scope, params)]
    _place_time_where(where, params, street=street, start=start, end=end)
    if by == "department":
        src = "incident i CROSS JOIN LATERAL unnest(i.department_ids) AS dep(id)"
        key = "dep.id"
    else:
        src, key = "incident i", f"i.{LEVEL_COLUMN[by]}"
    sql = (f"SELECT {key} AS key, {_STEP_MEDIANS} FROM {src} WHERE {' AND '.join(where)}"
           f" GROUP BY {key} ORDER BY {key}")
    rows = [dict(r) for r in conn.execute(text(sql), params).mappings()]
    if by == "department":
        names = {r.id: (r.code, r.name) for r in conn.execute(
            text("SELECT id, code, name FROM department"))}
        for r in rows:
            r["code"], r["name"] = names.get(r.pop("key"), (None, None))
    else:
        for r in rows:
            r["code"] = r.pop("key")
    return rows


def stats_geojson(conn: Connection, *, by: str = "grid", **kw: Any) -> dict[str, Any]:
    """``stats`` as an RFC 7946 FeatureCollection joined to the current area geometry
    (departments have no area: geometry null)."""
    rows = stats(conn, by=by, **kw)
    geoms: dict[str, tuple[str, dict]] = {}
    if by != "department" and rows:
        for r in conn.execute(
            text("SELECT code, name, ST_AsGeoJSON(geom, 7) AS g FROM area_current"
                 " WHERE level = :l AND code = ANY(:codes)"),
            {"l": by, "codes": [r["code"] for r in rows if r["code"]]},
        ):
            geoms[r.code] = (r.name, json.loads(r.g))
    feats = []
    for r in rows:
        name, geom = geoms.get(r["code"], (r.get("name"), None))
        props = {k: v for k, v in r.items()}
        props["name"] = name
        feats.append({"type": "Feature", "id": r["code"], "geometry": geom,
                      "properties": props})
    return {"type": "FeatureCollection", "features": feats}


# ---------------------------------------------------------------- categories and routing


def categories(conn: Connection) -> list[dict[str, Any]]:
    """The categories (Open311 services) with SLAs and routed departments."""
    return [dict(r) for r in conn.execute(text(
        "SELECT c.code, c.name_zh, c.name_en, c.description, c.checkin_workdays::float AS"
        " checkin_workdays, c.resolve_workdays::float AS resolve_workdays, c.active,"
        " coalesce(array_agg(d.code ORDER BY d.code) FILTER (WHERE d.code IS NOT NULL), '{}')"
        " AS departments FROM incident_category c"
        " LEFT JOIN category_department cd ON cd.category_code = c.code"
        " LEFT JOIN department d ON d.id = cd.department_id"
        " GROUP BY c.code ORDER BY c.code")).mappings()]


def departments(conn: Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(text(
        "SELECT id, code, name, name_en, level, area_code FROM department ORDER BY code"
    )).mappings()]


def set_routing(conn: Connection, category: str, department_codes: Iterable[str]) -> list[str]:
    """Replace the departments a category routes to (the editable routing table).
    Applies to new reports; open cases keep theirs (use ``reroute``)."""
    _category(conn, category)
    ids = _department_ids(conn, department_codes)
    conn.execute(text("DELETE FROM category_department WHERE category_code = :c"),
                 {"c": category})
    conn.execute(text("INSERT INTO category_department (category_code, department_id)"
                      " SELECT :c, unnest(CAST(:ids AS integer[]))"), {"c": category, "ids": ids})
    return sorted(department_codes)


def set_sla(conn: Connection, category: str, *, checkin_workdays: float | None = None,
            resolve_workdays: float | None = None) -> dict[str, Any]:
    """Change a category's SLA (working days; applies to new reports)."""
    _category(conn, category)
    for name, v in (("checkin_workdays", checkin_workdays),
                    ("resolve_workdays", resolve_workdays)):
        if v is not None and not 0 < v <= 365:
            raise InvalidInput("SLA out of range", [Problem(reason="0 < days ≤ 365", field=name)])
    conn.execute(text("UPDATE incident_category SET checkin_workdays ="
                      " coalesce(:a, checkin_workdays), resolve_workdays ="
                      " coalesce(:b, resolve_workdays) WHERE code = :c"),
                 {"a": checkin_workdays, "b": resolve_workdays, "c": category})
    return next(c for c in categories(conn) if c["code"] == category)
