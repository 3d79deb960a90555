"""Statistics per grid / community / street / district / city read from the daily roll-up.

``incident_grid_day`` (migration 0017, kept by a trigger on ``incident`` in each case's own
transaction) holds per street, UTC day and grid the counts, ratings and the hours of every step
of the cases reported that day. ``stats`` answers the whole UTC days of [start, end] from it
and the hours at either end (a part of a day) from ``incident`` itself, so the answer equals the
raw query's exactly (medians too: the roll-up keeps every step's hours, not a summary).
A grid's medians are one sort of its values (the days' arrays concatenated, then
``percentile_cont`` over them), not a sort of every value of the street by grid.
``overdue`` depends on the time of asking, so it is counted from the open cases (the partial
covering index ``ix_incident_open_street_due``). Departments (an array per case) and a
reporter's scope are not in the roll-up: ``usable`` says when it answers.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.auth.service import Scope
from geo.incidents.cases import scope_where

STEPS = (("checkin_h", "median_checkin_h",
          "date_part('epoch', i.checked_in_at - i.reported_at) / 3600"),
         ("consult_h", "median_consult_h",
          "date_part('epoch', i.consulting_at - i.checked_in_at) / 3600"),
         ("carry_out_h", "median_carry_out_h",
          "date_part('epoch', i.in_progress_at - i.consulting_at) / 3600"),
         ("feedback_h", "median_feedback_h",
          "date_part('epoch', i.feedback_at - i.in_progress_at) / 3600"),
         ("rating_h", "median_rating_h",
          "date_part('epoch', i.rated_at - i.feedback_at) / 3600"),
         ("total_h", "median_total_h", "CASE WHEN i.status = 'closed' THEN"
          " date_part('epoch', i.closed_at - i.reported_at) / 3600 END"))
COUNTS = ("incidents", "open", "closed", "duplicates", "rating_sum", "rating_n", "satisfied_n")
RAW_COUNTS = ("1", "i.is_open::int", "(i.status = 'closed')::int",
              "(i.status = 'duplicate')::int", "coalesce(i.rating, 0)",
              "(i.rating IS NOT NULL)::int", "coalesce(i.rating >= 4, false)::int")
ROLLUP_KEY = {"grid": "nullif(i.grid_code, '')", "community": "nullif(i.community_code, '')",
              "street": "nullif(i.street_code, '')", "district": "nullif(i.district_code, '')",
              "city": "left(nullif(i.district_code, ''), 4)"}


def usable(by: str, scope: Scope) -> bool:
    """Whether the roll-up answers ``stats(by=...)`` within ``scope``."""
    return by in ROLLUP_KEY and scope.department_id is None and scope.reporter_user_id is None


def _day_bounds(start: datetime | None, end: datetime | None
                ) -> tuple[datetime | None, datetime | None]:
    """The first whole UTC day's start at or after ``start`` and the start of the UTC day of
    ``end`` (whole days are those in [lo, hi)); None where the window is open."""
    lo = hi = None
    if start is not None:
        s = start.astimezone(UTC)
        lo = datetime.combine(s.date(), time(), UTC)
        if lo < s:
            lo += timedelta(days=1)
    if end is not None:
        hi = datetime.combine(end.astimezone(UTC).date(), time(), UTC)
    return lo, hi


def stats(conn: Connection, *, by: str, raw_key: str, street: str | None,
          start: datetime | None, end: datetime | None, now: datetime,
          scope: Scope) -> list[dict[str, Any]]:
    """The rows of ``geo.incidents.queries.stats`` (key, counts, medians, satisfaction) from
    the roll-up plus the partial days at the ends; ``raw_key`` is the raw query's key."""
    params: dict[str, Any] = {"now": now}
    lo, hi = _day_bounds(start, end)
    common = scope_where(scope, params)
    if street:
        common.append("i.street_code = :street")
        params["street"] = street
    roll = ["i.incidents > 0", *common]
    if lo is not None:
        roll.append("i.day >= :lo_day")
        params.update(lo_day=lo.date(), lo_ts=lo)
    if hi is not None:
        roll.append("i.day < :hi_day")
        params.update(hi_day=hi.date(), hi_ts=hi)
    raw = ["true", *common]
    if start is not None:
        raw.append("i.reported_at >= :start")
        params["start"] = start
    if end is not None:
        raw.append("i.reported_at <= :end")
        params["end"] = end
    edges = [c for c, b in (("i.reported_at < :lo_ts", lo), ("i.reported_at >= :hi_ts", hi))
             if b is not None]
    raw.append(f"({' OR '.join(edges)})" if edges else "false")
    arrays = ", ".join(a for a, _, _ in STEPS)
    sql = f"""
WITH u AS (
    SELECT {ROLLUP_KEY[by]} AS key, {', '.join(COUNTS)}, {arrays}
    FROM incident_grid_day i WHERE {' AND '.join(roll)}
    UNION ALL
    SELECT {raw_key}, {', '.join(RAW_COUNTS)}, {', '.join(f'ARRAY[{e}]' for _, _, e in STEPS)}
    FROM incident i WHERE {' AND '.join(raw)}
), g AS (
    SELECT key, {', '.join(f'sum({c})::bigint AS {c}' for c in COUNTS)},
           {', '.join(f'wangge_array_cat({a}) AS {a}' for a, _, _ in STEPS)}
    FROM u GROUP BY key
)
SELECT key, incidents, open, closed, duplicates,
       {', '.join(f'(SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY h) FROM unnest(g.{a}) h)'
                  f' AS {name}' for a, name, _ in STEPS)},
       (rating_sum::numeric / nullif(rating_n, 0))::float AS satisfaction_mean,
       satisfied_n::float / nullif(rating_n, 0)::float AS satisfied_share
FROM g WHERE incidents > 0 ORDER BY key"""
    rows = [dict(r) for r in conn.execute(text(sql), params).mappings()]
    over = ["i.is_open", "i.resolve_due <= :now", *common]
    over += [c for c, v in (("i.reported_at >= :start", start), ("i.reported_at <= :end", end))
             if v is not None]
    overdue = {r.key: r.n for r in conn.execute(text(
        f"SELECT {raw_key} AS key, count(*) AS n FROM incident i WHERE {' AND '.join(over)}"
        " GROUP BY 1"), params)}
    out = []
    for r in rows:  # the raw query's column order
        d = {k: r[k] for k in ("key", "incidents", "open", "closed", "duplicates")}
        d["overdue"] = overdue.get(r["key"], 0)
        d.update((k, v) for k, v in r.items() if k not in d)
        out.append(d)
    return out
