"""The six-step loop (六步接办) as an explicit state machine, re-routing, urging and escalation.

吹哨 reported → 报到 checked_in → 会商 consulting → 落实 in_progress → 反馈 feedback
→ 评价 rated → closed. Every change is one transaction: the case row and its append-only history
row are written together or not at all. Times are timestamptz (UTC in Python).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.auth.service import EVERYTHING, Scope
from geo.core import audit
from geo.core.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    Problem,
)
from geo.incidents.calendar import WorkCalendar
from geo.incidents.cases import (
    add_history,
    category_row,
    department_ids,
    lock_case,
    scope_where,
)
from geo.incidents.settings import IncidentSettings

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
ESCALATION = ("grid", "street", "district", "city")  # the city command centre is the top


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
    rater: tuple[int | None, str | None] | None = None,
    by_phone: bool = False,
) -> dict[str, Any]:
    """Move a case along the six-step loop; refuse anything not in ``TRANSITIONS`` (Conflict).

    ``rating`` (1-5) is required to enter ``rated``; only the reporter rates, or staff record a
    rating the reporter gave by phone (``by_phone``, marked in the history). ``rater`` is the
    signed-in caller (user id, role); None when no identity is enforced (the CLI, access off).
    Reopening (rated → in_progress) is allowed only after a poor rating
    (≤ ``poor_rating_max``). A case outside ``scope`` is refused.
    Returns the history entry.
    """
    if to_status not in STATUSES:
        raise InvalidInput(f"unknown status '{to_status}'",
                           [Problem(reason=f"one of {', '.join(STATUSES)}", field="to")])
    if not actor:
        raise InvalidInput("an actor is required", [Problem(reason="empty", field="actor")])
    case = lock_case(conn, incident_id, scope)
    action = TRANSITIONS.get((case.status, to_status))
    if action is None:
        allowed = [t for (f, t) in TRANSITIONS if f == case.status]
        raise Conflict(
            f"illegal transition {case.status} → {to_status} for incident {incident_id}",
            [Problem(reason=f"from '{case.status}' ({STEPS_ZH[case.status]}) the case may go "
                     f"to: {', '.join(allowed) or 'nowhere'}", field="to",
                     detail={"from": case.status, "to": to_status, "allowed": allowed})],
        )
    sets: dict[str, Any] = {"status": to_status}
    if action == "rate":
        if rating is None or not 1 <= int(rating) <= 5:
            raise InvalidInput("a rating 1-5 is required to rate",
                               [Problem(reason="integer 1-5", field="rating")])
        sets["rating"] = int(rating)
        _may_rate(conn, incident_id, rater, by_phone)
    if action == "reopen" and (case.rating or 0) > settings.poor_rating_max:
        raise Conflict(
            f"incident {incident_id} was rated {case.rating}: only a poor rating "
            f"(≤ {settings.poor_rating_max}) reopens a case",
            [Problem(reason="rating not poor", field="to", detail={"rating": case.rating})],
        )
    now = now or datetime.now(UTC)
    detail: dict[str, Any] = {"rating": rating} if rating is not None else {}
    if action == "rate" and by_phone:
        detail["by_phone"] = True  # recorded by staff for the reporter
    entry = add_history(conn, incident_id, action, case.status, to_status, actor, note,
                        detail, now)
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


def _may_rate(conn: Connection, incident_id: int, rater: tuple[int | None, str | None] | None,
              by_phone: bool) -> None:
    """Only the reporter rates; staff only record a rating given by phone (``by_phone``)."""
    user_id, role = rater if rater is not None else (None, None)
    if by_phone:
        if rater is not None and role in (None, "resident"):
            raise Forbidden("only staff record a rating given by phone", [Problem(
                reason="a resident rates their own report without by_phone", field="by_phone")])
        return
    if rater is None:  # no identity enforced (CLI, access off): the caller is trusted
        return
    reporter = conn.execute(text("SELECT reporter_user_id FROM incident WHERE id = :i"),
                            {"i": incident_id}).scalar()
    if reporter is None or reporter != user_id:
        raise Forbidden(f"only the reporter rates incident {incident_id}", [Problem(
            reason="not the reporter; staff recording a rating given by phone set by_phone=true",
            field="rating")])


def _apply_update(conn: Connection, sql: str, params: dict[str, Any]) -> None:
    """The case-row update of a transition (a seam for failure-injection tests)."""
    conn.execute(text(sql), params)


def reroute(conn: Connection, incident_id: int, department_codes: Iterable[str], *,
            actor: str, note: str | None = None, settings: IncidentSettings,
            now: datetime | None = None, scope: Scope = EVERYTHING) -> dict[str, Any]:
    """Send a case to other departments: back to 吹哨 with a fresh check-in deadline."""
    case = lock_case(conn, incident_id, scope)
    if case.status not in REROUTABLE:
        raise Conflict(f"incident {incident_id} is '{case.status}': only cases in "
                       f"{', '.join(sorted(REROUTABLE))} can be re-routed",
                       [Problem(reason="not re-routable now", field="departments")])
    ids = department_ids(conn, department_codes)
    now = now or datetime.now(UTC)
    cat = category_row(conn, case.category_code)
    due = WorkCalendar(settings).add(now, cat.checkin_workdays)
    entry = add_history(conn, incident_id, "reroute", case.status, "reported", actor, note,
                     {"from_departments": list(case.department_ids), "to_departments": ids},
                     now)
    conn.execute(
        text("UPDATE incident SET department_ids = :d, status = 'reported', checkin_due = :due,"
             " checked_in_at = NULL, consulting_at = NULL, updated_at = :now WHERE id = :i"),
        {"d": ids, "due": due, "now": now, "i": incident_id},
    )
    return {"history_id": entry, "incident_id": incident_id, "departments": ids}


def urge(conn: Connection, incident_id: int, *, actor: str, note: str | None = None,
         now: datetime | None = None, scope: Scope = EVERYTHING) -> dict[str, Any]:
    """督办: the command centre urges and supervises an open case (recorded in history)."""
    case = lock_case(conn, incident_id, scope)
    if case.status in ("closed", "duplicate"):
        raise Conflict(f"incident {incident_id} is {case.status}: nothing to urge",
                       [Problem(reason="case not open", field="id")])
    now = now or datetime.now(UTC)
    entry = add_history(conn, incident_id, "urge", case.status, case.status, actor, note, {}, now)
    audit.record(conn, actor, "incident.urge", target=str(incident_id), detail={"note": note})
    conn.execute(text("UPDATE incident SET urge_count = urge_count + 1, updated_at = :n"
                      " WHERE id = :i"), {"n": now, "i": incident_id})
    return {"history_id": entry, "incident_id": incident_id, "action": "urge"}


def escalate_overdue(conn: Connection, *, settings: IncidentSettings,
                     now: datetime | None = None, actor: str = "system",
                     scope: Scope = EVERYTHING) -> list[dict[str, Any]]:
    """Escalate grid → street → district → city every case (within ``scope``) no department
    checked in to in time.

    Each escalation restarts the check-in clock and is written to the history. Returns the
    escalations made.
    """
    now = now or datetime.now(UTC)
    params: dict[str, Any] = {"n": now}
    where = " ".join(f"AND {w}" for w in scope_where(scope, params))
    rows = conn.execute(
        text("SELECT i.id, i.escalation_level, c.checkin_workdays FROM incident i"
             " JOIN incident_category c ON c.code = i.category_code"
             " WHERE i.status = 'reported' AND i.checkin_due < :n"
             f" AND i.escalation_level <> 'city' {where} ORDER BY i.checkin_due"
             " FOR UPDATE OF i SKIP LOCKED"),
        params,
    ).all()
    cal = WorkCalendar(settings)
    out = []
    for r in rows:
        new = ESCALATION[ESCALATION.index(r.escalation_level) + 1]
        due = cal.add(now, r.checkin_workdays)
        add_history(conn, r.id, "escalate", "reported", "reported", actor,
                 f"no check-in within SLA: {r.escalation_level} → {new}",
                 {"from_level": r.escalation_level, "to_level": new}, now)
        conn.execute(text("UPDATE incident SET escalation_level = :l, checkin_due = :d,"
                          " updated_at = :n WHERE id = :i"),
                     {"l": new, "d": due, "n": now, "i": r.id})
        out.append({"incident_id": r.id, "from": r.escalation_level, "to": new,
                    "checkin_due": due})
    return out
