"""Categories (Open311 services) with their SLAs, departments, and the editable routing
table from category to departments."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

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


def set_routing(conn: Connection, category: str, department_codes: Iterable[str]) -> list[str]:
    """Replace the departments a category routes to (the editable routing table).
    Applies to new reports; open cases keep theirs (use ``reroute``)."""
    category_row(conn, category)
    ids = department_ids(conn, department_codes)
    conn.execute(text("DELETE FROM category_department WHERE category_code = :c"),
                 {"c": category})
    conn.execute(text("INSERT INTO category_department (category_code, department_id)"
                      " SELECT :c, unnest(CAST(:ids AS integer[]))"), {"c": category, "ids": ids})
    return sorted(department_codes)


def set_sla(conn: Connection, category: str, *, checkin_workdays: float | None = None,
            resolve_workdays: float | None = None) -> dict[str, Any]:
    """Change a category's SLA (working days; applies to new reports)."""
    category_row(conn, category)
    for name, v in (("checkin_workdays", checkin_workdays),
                    ("resolve_workdays", resolve_workdays)):
        if v is not None and not 0 < v <= 365:
            raise InvalidInput("SLA out of range", [Problem(reason="0 < days ≤ 365", field=name)])
    conn.execute(text("UPDATE incident_category SET checkin_workdays ="
                      " coalesce(:a, checkin_workdays), resolve_workdays ="
                      " coalesce(:b, resolve_workdays) WHERE code = :c"),
                 {"a": checkin_workdays, "b": resolve_workdays, "c": category})
    return next(c for c in categories(conn) if c["code"] == category)
