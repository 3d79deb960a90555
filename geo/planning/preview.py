"""Dry runs of planning changes: the same code path as the real change, rolled back.

``dry_run(fn, conn, ...)`` runs any planning operation (split, merge, reshape, reassign, import,
accept a draft) with ``geo.planning.changes.DRY_RUN`` set: every step writes inside the change's
SAVEPOINT, the checks run, ``describe`` reads the would-be state, and the savepoint is rolled
back, so nothing is written. Input errors (an unknown grid, a line that does not cut) still
raise as in the real change. Geometry out is GeoJSON in WGS 84 (lon, lat); areas in m² in the
district's metric CRS (UTM).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.core.errors import Problem
from geo.planning.changes import DRY_RUN, ChangeResult

if TYPE_CHECKING:
    from geo.planning.changes import _Change

GRIDS_SQL = """
SELECT a.code, a.parent_code, a.name, a.responsible_body, ST_AsGeoJSON(a.geom, 9) AS geojson,
       coalesce(sum(b.households), 0)::int AS households,
       coalesce(sum(b.residents), 0)::int AS residents, count(b.id)::int AS buildings
FROM area a LEFT JOIN building b ON b.grid_code = a.code
WHERE a.level = 'grid' AND a.generation_high IS NULL AND a.code = ANY(:codes)
GROUP BY a.code, a.parent_code, a.name, a.responsible_body, a.geom
ORDER BY a.code
"""

FIGURES = ("m2", "households", "by", "other", "grids")


def problem_feature(p: Problem, *, severity: str) -> dict[str, Any]:
    """A check's problem as a GeoJSON Point feature where it is (WGS 84), with its figure."""
    d = p.detail or {}
    lon, lat = d.get("lon"), d.get("lat")
    geom = ({"type": "Point", "coordinates": [lon, lat]}
            if lon is not None and lat is not None else None)
    props = {"check": d.get("check", p.field), "severity": severity, "reason": p.reason,
             "field": p.field, "feature": p.feature,
             **{k: d[k] for k in FIGURES if k in d}}
    return {"type": "Feature", "geometry": geom, "properties": props}


def describe(conn: Connection, ch: _Change) -> dict[str, Any]:
    """The would-be state of change ``ch`` (called inside its savepoint, before rollback):
    the grids it creates or changes with households, residents and buildings; the new codes in
    DB11 order; the retired codes; the team members of the grids it closes (id, grid_code,
    name, role: what ``grids.{code}.team`` may list); every check's problem located."""
    closed = set(ch.closed)
    created = sorted(c for c in ch.new_codes if c not in closed)
    shown = sorted((set(ch.touched) - set(ch.retired)) | set(created))
    feats = []
    report = ch.result.grids if ch.result else {}
    for r in conn.execute(text(GRIDS_SQL), {"codes": shown}).mappings():
        status = ("created" if r["code"] in created else
                  "changed" if r["code"] in ch.replace else "touched")
        feats.append({"type": "Feature", "geometry": json.loads(r["geojson"]), "properties": {
            "code": r["code"], "parent_code": r["parent_code"], "name": r["name"],
            "responsible_body": r["responsible_body"], "households": r["households"],
            "residents": r["residents"], "buildings": r["buildings"], "status": status,
            "team_from": report.get(r["code"], {}).get("team_from"),
            "team": report.get(r["code"], {}).get("team")}})
    warnings = [Problem(**w) for w in (ch.result.warnings if ch.result else [])]
    problems = ([problem_feature(p, severity="error") for p in ch.errors]
                + [problem_feature(p, severity="warning") for p in warnings])
    return {"accepted": not ch.errors, "codes": created, "retired": list(ch.retired),
            "parent_team": ch.parent_team,
            "grids": {"type": "FeatureCollection", "features": feats},
            "problems": {"type": "FeatureCollection", "features": problems}}


def dry_run(fn: Callable[..., ChangeResult], conn: Connection, *args: Any,
            **kwargs: Any) -> dict[str, Any]:
    """Run planning operation ``fn(conn, *args, **kwargs)`` as a dry run: nothing is written.

    Returns ``describe``'s preview plus the change's summary (operation, created, retired,
    changed, buildings_moved) without a generation id (none is kept).
    """
    token = DRY_RUN.set(True)
    try:
        res = fn(conn, *args, **kwargs)
    finally:
        DRY_RUN.reset(token)
    assert res.preview is not None
    summary = {k: v for k, v in res.as_dict().items()
               if k in ("operation", "created", "retired", "changed", "buildings_moved")}
    return {**summary, **res.preview}
