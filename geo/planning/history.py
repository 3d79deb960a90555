"""Undo a planning change, or cancel one that is scheduled and not yet in force.

**Undo** writes a *new* generation (through the one writer, ``apply_change``: the same district
lock, checks, team carry-over and audit trail as any change) that restores the grids as they
were just before the undone generation G:

* grids G created are closed and their codes retired, like any grid a change removes (a code is
  never given to another grid);
* grids G closed come back *with their previous codes*, names, responsible bodies and geometry.
  Their codes were retired by G itself, so bringing back exactly those codes for exactly those
  grids is the honest meaning of undo, not a reuse: the ``retired_code`` rows G wrote for them
  are removed in the same savepoint (``revive``), nothing else is;
* grids whose geometry G changed (reshape) get their previous geometry as a new version;
* buildings G moved go back to the grid they had before G (``building_move`` of G).

Only the latest generation of its district(s) can be undone (a later change was built on it:
undo that first), and only a planning change (a data load is replaced by loading the previous
file). A scheduled G is undone with a date on or after its own, or better cancelled.

**Cancel** removes a scheduled planning generation that is not yet in force, as if it had never
been saved: its grid versions, retired codes, building moves and team copies are deleted, the
versions it closed are open again, and the cancellation is recorded in ``audit_log`` (who, when,
what the generation was). Geometry is EPSG:4326.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import shapely
from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.core import audit
from geo.core.errors import Conflict, NotFound, Problem
from geo.data.generations import GENERATION_LOCK, LOCK_NAMESPACE, lock_districts
from geo.planning.changes import ChangeResult, apply_change
from geo.planning.settings import PlanningSettings

# Grid versions closed by generation :g: a closing change sets generation_high to the newest
# generation before it (gaps in ids, e.g. a refused change's or a cancelled one's, included).
CLOSED_BY = ("level = 'grid' AND generation_high < :g AND generation_high >= "
             "coalesce((SELECT max(id) FROM generation WHERE id < :g), 0)")


def generation_info(conn: Connection, gen: int) -> dict[str, Any]:
    """id, kind, effective_from, districts, scheduled (not yet in force) of generation ``gen``."""
    row = conn.execute(text(
        "SELECT id, kind, note, author, effective_from, districts, "
        "effective_from > clock_timestamp() AS scheduled FROM generation WHERE id = :g"),
        {"g": gen}).mappings().first()
    if row is None:
        raise NotFound(f"no generation {gen}", [Problem(
            reason="no such generation", field="generation", feature=gen)])
    return dict(row)


def touched_codes(conn: Connection, gen: int) -> list[str]:
    """Grid codes generation ``gen`` created, closed or moved buildings between (for the
    district lock and the callers' area scope)."""
    return sorted(set(conn.execute(text(
        f"SELECT code FROM area WHERE generation_low = :g AND level = 'grid' "
        f"UNION SELECT code FROM area WHERE {CLOSED_BY} "
        "UNION SELECT from_grid FROM building_move WHERE generation_id = :g "
        "AND from_grid IS NOT NULL "
        "UNION SELECT to_grid FROM building_move WHERE generation_id = :g "
        "AND to_grid IS NOT NULL"), {"g": gen}).scalars()))


def _refuse_unless_latest_planning(conn: Connection, info: dict[str, Any], what: str) -> None:
    """409 unless ``info`` is a planning change and no later generation touches its districts."""
    gen = info["id"]
    if not str(info["kind"]).startswith("planning:"):
        raise Conflict(f"generation {gen} is a data load ({info['kind']}), not a planning "
                       f"change: it cannot be {what}", [Problem(
                           reason=f"only planning changes can be {what}; load the previous "
                           "file again instead", field="generation", feature=gen)])
    later = conn.execute(text(
        "SELECT id, kind, effective_from FROM generation WHERE id > :g AND "
        "(districts IS NULL OR CAST(:d AS varchar[]) IS NULL "
        " OR districts && CAST(:d AS varchar[])) ORDER BY id"),
        {"g": gen, "d": info["districts"]}).all()
    if later:
        raise Conflict(f"generation {gen} is not the latest change of its district(s): it "
                       f"cannot be {what}", [Problem(
                           reason=f"generation {h.id} ({h.kind}, effective "
                           f"{h.effective_from.isoformat()}) changed the same district later; "
                           f"undo or cancel it first", field="generation", feature=h.id)
                           for h in later])


def undo_generation(conn: Connection, gen: int, *, effective_from: datetime | None = None,
                    settings: PlanningSettings | None = None,
                    author: str | None = None) -> ChangeResult:
    """Undo planning generation ``gen`` as a new generation restoring the grids before it.

    Refused (409) unless ``gen`` is the latest generation of its district(s); a scheduled one
    needs an ``effective_from`` on or after its own (or cancel it: ``cancel_generation``).
    """
    info = generation_info(conn, gen)
    lock_districts(conn, [*(info["districts"] or []), *touched_codes(conn, gen)])
    _refuse_unless_latest_planning(conn, info, "undone")
    if info["scheduled"] and effective_from is None:
        raise Conflict(f"generation {gen} is scheduled for {info['effective_from'].isoformat()} "
                       "and not yet in force", [Problem(
                           reason="cancel it instead (DELETE /v1/planning/generations/"
                           f"{gen}), or date the undo on or after it", field="effective_from")])
    cols = "code, parent_code, name, responsible_body, generation_high, ST_AsBinary(geom) AS wkb"
    new = {r["code"]: r for r in conn.execute(text(
        f"SELECT {cols} FROM area WHERE level = 'grid' AND generation_low = :g"),
        {"g": gen}).mappings()}
    old = {r["code"]: r for r in conn.execute(text(
        f"SELECT {cols} FROM area WHERE {CLOSED_BY}"), {"g": gen}).mappings()}
    stale = sorted(c for c, r in new.items() if r["generation_high"] is not None)
    if stale:
        raise Conflict(f"grids of generation {gen} were changed since", [Problem(
            reason="a later change closed this grid", field="generation", feature=c)
            for c in stale])
    back: dict[str, str] = dict(conn.execute(text(
        "SELECT DISTINCT ON (building_code) building_code, from_grid FROM building_move "
        "WHERE generation_id = :g AND from_grid IS NOT NULL ORDER BY building_code, id"),
        {"g": gen}).all())
    if not new and not old and not back:
        raise Conflict(f"generation {gen} changed nothing to undo", [Problem(
            reason="no grid or building was changed by it", field="generation", feature=gen)])

    def geom(r: Any) -> shapely.Geometry:
        return shapely.from_wkb(bytes(r["wkb"]))

    replace: dict[str, Any] = {}
    retire = [c for c in new if c not in old]
    create: list[dict[str, Any]] = []
    for code, r in old.items():
        item = {"code": code, "parent_code": r["parent_code"], "geometry": geom(r),
                "name": r["name"], "responsible_body": r["responsible_body"]}
        if code not in new:
            create.append(item)
        elif (new[code]["name"], new[code]["responsible_body"]) == (r["name"],
                                                                    r["responsible_body"]):
            replace[code] = geom(r)
        else:  # a new version of the same code with its old name and body
            retire.append(code)
            create.append(item)
    revive = {c["code"]: gen for c in create if c["code"] not in new}
    return apply_change(conn, "undo", replace=replace, retire=sorted(retire), create=create,
                        reassign=back, revive=revive,
                        params={"generation": gen, "kind": info["kind"]},
                        effective_from=effective_from, settings=settings,
                        note=f"undo of generation {gen}", author=author)


def cancel_generation(conn: Connection, gen: int, *, author: str | None = None) -> dict[str, Any]:
    """Remove scheduled planning generation ``gen`` (not yet in force), audited.

    Refused (409) once it is in force (undo it then) or when a later change of its district(s)
    was built on it. Returns what was removed.
    """
    info = generation_info(conn, gen)
    codes = touched_codes(conn, gen)
    lock_districts(conn, [*(info["districts"] or []), *codes])
    conn.execute(text("SELECT pg_advisory_xact_lock(:ns, :k)"),
                 {"ns": LOCK_NAMESPACE, "k": GENERATION_LOCK})
    info = generation_info(conn, gen)  # read again under the locks
    if not info["scheduled"]:
        raise Conflict(f"generation {gen} is already in force (since "
                       f"{info['effective_from'].isoformat()}): it cannot be cancelled",
                       [Problem(reason="undo it instead (POST /v1/planning/undo)",
                                field="generation", feature=gen)])
    _refuse_unless_latest_planning(conn, info, "cancelled")
    p = {"g": gen}
    summary = conn.execute(text(
        "SELECT operation, summary FROM planning_change WHERE generation_id = :g"),
        p).mappings().first()
    sp = conn.begin_nested()
    try:
        moved = conn.execute(text(
            "WITH first AS (SELECT DISTINCT ON (building_code) building_code, from_grid "
            "FROM building_move WHERE generation_id = :g ORDER BY building_code, id) "
            "UPDATE building b SET grid_code = first.from_grid FROM first "
            "WHERE b.code = first.building_code"), p).rowcount or 0
        created = conn.execute(text(
            "SELECT code FROM area n WHERE n.level = 'grid' AND n.generation_low = :g AND NOT "
            "EXISTS (SELECT 1 FROM area o WHERE o.code = n.code AND o.id <> n.id)"),
            p).scalars().all()
        conn.execute(text("DELETE FROM grid_team_member WHERE grid_code = ANY(:c)"),
                     {"c": list(created)})
        runs = conn.execute(text(
            "UPDATE analysis_run SET generation_id = generation_at(clock_timestamp()) "
            "WHERE generation_id = :g RETURNING id"), p).scalars().all()
        for table in ("building_move", "retired_code", "planning_change"):
            conn.execute(text(f"DELETE FROM {table} WHERE generation_id = :g"), p)
        conn.execute(text("DELETE FROM area WHERE generation_low = :g"), p)
        reopened = conn.execute(text(
            f"UPDATE area SET generation_high = NULL WHERE {CLOSED_BY} RETURNING code"),
            p).scalars().all()
        conn.execute(text("DELETE FROM generation WHERE id = :g"), p)
        out = {"generation": gen, "kind": info["kind"],
               "effective_from": info["effective_from"].isoformat(),
               "operation": summary["operation"] if summary else None,
               "grids_removed": sorted(created), "grids_restored": sorted(reopened),
               "buildings_restored": moved, "analysis_runs_repointed": list(runs)}
        audit.record(conn, author, "planning_cancel", target=str(gen), detail={
            **out, "author": info["author"], "note": info["note"],
            "summary": summary["summary"] if summary else None})
    except Exception:
        sp.rollback()
        raise
    sp.commit()
    return out
