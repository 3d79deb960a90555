"""Categories (Open311 services) with their SLAs, departments, and the editable routing
table from category to departments."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.core import audit
from geo.core.errors import (
    InvalidInput,
    Problem,
)
from geo.incidents.cases import (
    category_row,
    department_ids,
)


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


def set_routing(conn: Connection, category: str, department_codes: Iterable[str], *,
                actor: str | None = None) -> list[str]:
    """Replace the departments a category routes to (the editable routing table).
    Applies to new reports; open cases keep theirs (use ``reroute``). Audited (``actor``)."""
    category_row(conn, category)
    department_codes = list(department_codes)
    ids = department_ids(conn, department_codes)
    audit.record(conn, actor, "routing.set", target=category,
                 detail={"departments": sorted(department_codes)})
    conn.execute(text("DELETE FROM category_department WHERE category_code = :c"),
                 {"c": category})
    conn.execute(text("INSERT INTO category_department (category_code, department_id)"
                      " SELECT :c, unnest(CAST(:ids AS integer[]))"), {"c": category, "ids": ids})
    return sorted(department_codes)


# The shortest SLA: one working hour. SLAs are stored to 0.01 working day (14.4 min), so a
# value is refused when it is stored below 1/24 day (0.04 would be 57.6 min).
SLA_MIN_WORKDAYS = 1 / 24


def set_sla(conn: Connection, category: str, *, checkin_workdays: float | None = None,
            resolve_workdays: float | None = None, actor: str | None = None) -> dict[str, Any]:
    """Change a category's SLA (working days, at least one working hour, at most 365; applies
    to new reports). Audited (``actor``)."""
    category_row(conn, category)
    for name, v in (("checkin_workdays", checkin_workdays),
                    ("resolve_workdays", resolve_workdays)):
        if v is not None and not (math.isfinite(v) and 0 < v <= 365):
            raise InvalidInput("SLA out of range", [Problem(reason="0 < days ≤ 365", field=name)])
        if v is not None and round(v, 2) < SLA_MIN_WORKDAYS:
            raise InvalidInput("SLA shorter than one working hour", [Problem(
                reason=f"{v} working days is stored as {round(v, 2):.2f} (< 1 working hour = "
                f"{SLA_MIN_WORKDAYS:.4f} day); give at least 0.05", field=name)])
    audit.record(conn, actor, "sla.set", target=category,
                 detail={"checkin_workdays": checkin_workdays,
                         "resolve_workdays": resolve_workdays})
    conn.execute(text("UPDATE incident_category SET checkin_workdays ="
                      " coalesce(:a, checkin_workdays), resolve_workdays ="
                      " coalesce(:b, resolve_workdays) WHERE code = :c"),
                 {"a": checkin_workdays, "b": resolve_workdays, "c": category})
    return next(c for c in categories(conn) if c["code"] == category)
