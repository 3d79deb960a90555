"""The one writer every planning operation goes through: a change as a new generation.

Every accepted change writes ONE new ``generation`` (``effective_from`` a parameter, default
now). Unchanged areas are carried over untouched (their ``generation_high`` stays NULL); each
changed or removed grid gets ``generation_high`` = the previous generation and each changed or
new grid a new version with ``generation_low`` = the new generation. So an area is valid in
generation g when ``generation_low <= g <= coalesce(generation_high, inf)`` (as in
``geo.data.store.write_layers`` and the lookup's ``at=``).

The change is written inside a SAVEPOINT, then checked (``geo.planning.checks``). Any failure
rolls the savepoint back (the database is exactly as before) and raises ``InvalidInput`` with one
``Problem`` per failure. Geometry is EPSG:4326.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import shapely
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from geo.core.audit import default_actor
from geo.core.codes import community_of, district_of
from geo.core.errors import Conflict, InvalidInput, NotFound, Problem
from geo.data.generations import lock_districts, new_generation
from geo.planning.checks import check_communities
from geo.planning.choices import apply_choices, check_names, parent_team, team_assignment
from geo.planning.geometry import as_geom, to_multipolygon
from geo.planning.numbering import allocate_codes
from geo.planning.settings import PlanningSettings

log = logging.getLogger(__name__)

# Set by ``geo.planning.preview.dry_run``: the change runs its every step, is described, and is
# rolled back (the checks' errors are reported, not raised).
DRY_RUN: ContextVar[bool] = ContextVar("planning_dry_run", default=False)


@dataclass
class ChangeResult:
    """An accepted change: its generation and what it did."""

    generation: int
    operation: str
    created: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    buildings_moved: int = 0
    warnings: list[dict[str, Any]] = field(default_factory=list)
    grids: dict[str, dict[str, Any]] = field(default_factory=dict)
    preview: dict[str, Any] | None = None  # a dry run's would-be state (geo.planning.preview)
    source: dict[str, Any] = field(default_factory=dict)  # an import: how the file was read

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def current_grid(conn: Connection, code: str) -> dict[str, Any]:
    row = conn.execute(text(
        "SELECT code, parent_code, name, responsible_body, ST_AsBinary(geom) AS wkb FROM area "
        "WHERE level = 'grid' AND code = :c AND generation_high IS NULL"), {"c": code}
    ).mappings().first()
    if row is None:
        raise NotFound(f"no current grid {code}",
                       [Problem(reason="no such current grid", field="code", feature=code)])
    out = dict(row)
    out["geom"] = shapely.from_wkb(bytes(row["wkb"]))
    return out


def building_grids(conn: Connection, codes: list[str]) -> dict[str, str | None]:
    """{building code: its current grid code} for the known buildings among ``codes``."""
    return dict(conn.execute(text("SELECT code, grid_code FROM building WHERE code = ANY(:c)"),
                             {"c": codes}).all())


def latest_generation(conn: Connection) -> tuple[int | None, datetime | None]:
    row = conn.execute(text(
        "SELECT id, effective_from FROM generation ORDER BY id DESC LIMIT 1")).first()
    return (row[0], row[1]) if row else (None, None)


MOVE_SQL = """
WITH m AS (
    SELECT DISTINCT ON (b.id) b.id, b.code, b.grid_code AS old, g.code AS new
    FROM area g JOIN building b ON ST_Intersects(g.geom, b.location)
    WHERE g.level = 'grid' AND g.generation_high IS NULL AND g.code = ANY(:t)
    ORDER BY b.id, g.code
), moved AS (SELECT * FROM m WHERE old IS DISTINCT FROM new),
log AS (INSERT INTO building_move (generation_id, building_code, from_grid, to_grid)
        SELECT :g, code, old, new FROM moved)
UPDATE building b SET grid_code = moved.new FROM moved WHERE b.id = moved.id
"""


def apply_change(
    conn: Connection,
    operation: str,
    *,
    replace: dict[str, Any] | None = None,
    retire: list[str] | None = None,
    create: list[dict[str, Any]] | None = None,
    reassign: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
    effective_from: datetime | None = None,
    settings: PlanningSettings | None = None,
    note: str | None = None,
    author: str | None = None,
    grids: dict[str, dict[str, Any]] | None = None,
    revive: dict[str, int] | None = None,
) -> ChangeResult:
    """Write one change as a new generation, check it, keep it or roll it back.

    ``replace``: {grid code: new geometry}; ``retire``: grid codes closed and retired;
    ``create``: [{code?, parent_code, geometry, name?, responsible_body?}] (codes allocated by
    DB11 where missing); ``reassign``: {building code: grid code}. Geometry EPSG:4326.
    ``grids``: the caller's {new grid code: {name, responsible_body, team}} (see
    ``geo.planning.choices``: a code the change does not create → 409, nothing written).
    Runs in a SAVEPOINT of the caller's transaction: refused → nothing written. Serialised per
    district (``geo.data.generations.lock_districts``: the checks run under the lock, against
    any concurrent change's committed result); ``author`` is recorded as who made the change.
    ``revive``: {code: generation that retired it}, codes an undo brings back (their
    ``retired_code`` rows are removed in the same savepoint; see ``geo.planning.history``).
    """
    settings = settings or PlanningSettings()
    replace = replace or {}
    retire = list(retire or [])
    create = list(create or [])
    reassign = dict(reassign or {})
    lock_districts(conn, [*replace, *retire, *reassign.values(),
                          *(str(c.get("code") or c.get("parent_code") or "") for c in create)])
    latest, _ = latest_generation(conn)
    if latest is None:
        raise NotFound("no generation yet: load a district first")
    sp = conn.begin_nested()
    try:
        result = _write(conn, _Change(operation, replace, retire, create, reassign,
                                      params or {}, effective_from, settings, note, author,
                                      choices=dict(grids or {}), revive=dict(revive or {})))
    except IntegrityError as exc:  # a constraint the checks did not foresee: 409, not 500
        sp.rollback()
        first = str(exc.orig).splitlines()[0] if exc.orig else type(exc).__name__
        raise Conflict(f"refused {operation}: it conflicts with the stored grids",
                       [Problem(reason=first[:300], field="code")]) from None
    except Exception:
        sp.rollback()
        raise
    if DRY_RUN.get():
        sp.rollback()
    else:
        sp.commit()
    return result


def community_code(code: str) -> str:
    """The community code of a grid code (the code itself when it is shorter)."""
    return community_of(code) or code


@dataclass
class _Change:
    """The state of one change as its steps write it (see ``STEPS``)."""

    operation: str
    replace: dict[str, Any]
    retire: list[str]
    create: list[dict[str, Any]]
    reassign: dict[str, str]
    params: dict[str, Any]
    effective_from: datetime | None
    settings: PlanningSettings
    note: str | None
    author: str | None = None
    choices: dict[str, dict[str, Any]] = field(default_factory=dict)
    renames: dict[str, dict[str, Any]] = field(default_factory=dict)
    revive: dict[str, int] = field(default_factory=dict)
    team_from: dict[str, str] = field(default_factory=dict)
    parent_team: list[dict[str, Any]] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    current: dict[str, Any] = field(default_factory=dict)
    new_codes: list[str] = field(default_factory=list)
    generation: int = 0
    prev: int | None = None
    retired: list[str] = field(default_factory=list)
    touched: list[str] = field(default_factory=list)
    communities: list[str] = field(default_factory=list)
    moved: int = 0
    errors: list[Problem] = field(default_factory=list)
    result: ChangeResult | None = None


def _closing(conn: Connection, ch: _Change) -> None:
    """The grids closed (replaced or retired): all must be current."""
    ch.closed = sorted(set(ch.replace) | set(ch.retire))
    ch.current = {r[0]: r for r in conn.execute(text(
        "SELECT code, parent_code, name, responsible_body FROM area WHERE level = 'grid' "
        "AND generation_high IS NULL AND code = ANY(:c)"), {"c": ch.closed}).all()}
    missing = [c for c in ch.closed if c not in ch.current]
    gone = set(conn.execute(text("SELECT code FROM retired_code WHERE code = ANY(:c)"),
                            {"c": missing}).scalars()) if missing else set()
    if gone:  # e.g. a concurrent change retired it (it held the district lock first)
        raise Conflict("grids already retired", [Problem(
            reason="this grid was retired by an earlier change", field="code", feature=c)
            for c in sorted(gone)])
    if missing:
        raise NotFound("grids not current", [Problem(reason="no such current grid",
                                                      field="code", feature=c) for c in missing])


def _reviving(conn: Connection, ch: _Change) -> None:
    """An undo brings back the codes the undone change retired: exactly those, each only if the
    generation named retired it (the never-reuse rule is about *other* grids taking a code)."""
    for code, gen in sorted(ch.revive.items()):
        gone = conn.execute(text(
            "DELETE FROM retired_code WHERE code = :c AND generation_id = :g RETURNING code"),
            {"c": code, "g": gen}).first()
        if gone is None:
            raise Conflict("a code to bring back was not retired by that change", [Problem(
                reason=f"code {code} was not retired by generation {gen}", field="code",
                feature=code)])


def _numbering(conn: Connection, ch: _Change) -> None:
    """Codes for new grids (DB11 within each community); refuse codes current or retired."""
    by_comm: dict[str, list[int]] = {}
    for i, item in enumerate(ch.create):
        if not item.get("code"):
            by_comm.setdefault(item["parent_code"], []).append(i)
        else:
            item["parent_code"] = item.get("parent_code") or community_code(str(item["code"]))
    for comm, idx in by_comm.items():
        codes = allocate_codes(conn, comm, [ch.create[i]["geometry"] for i in idx], ch.settings)
        for i, c in zip(idx, codes, strict=True):
            ch.create[i]["code"] = c
    ch.new_codes = [str(c["code"]) for c in ch.create]
    apply_choices(ch)
    _derive_names(ch.create)
    check_names(conn, ch)
    retire_set = set(ch.retire)  # O(1) tests
    clash = conn.execute(text(
        "SELECT code FROM retired_code WHERE code = ANY(:c) UNION "
        "SELECT code FROM area WHERE generation_high IS NULL AND code = ANY(:c)"),
        {"c": [c for c in ch.new_codes if c not in retire_set]}).scalars().all()
    if clash:
        raise Conflict("codes already in use or retired", [
            Problem(reason="code is current or was retired; codes are never reused",
                    field="code", feature=c) for c in sorted(clash)])


def _versions(conn: Connection, ch: _Change) -> None:
    """The new generation: close the old versions, insert the new ones, retire codes."""
    districts = sorted({d for c in [*ch.closed, *ch.new_codes] if (d := district_of(str(c)))})
    gen = new_generation(conn, kind=f"planning:{ch.operation}", note=ch.note or ch.operation,
                         effective_from=ch.effective_from, author=ch.author,
                         districts=districts or None)
    ch.generation = gen
    prev = ch.prev = conn.execute(text("SELECT max(id) FROM generation WHERE id < :g"),
                                  {"g": gen}).scalar_one()
    if ch.closed:
        conn.execute(text(
            "UPDATE area SET generation_high = :prev WHERE level = 'grid' "
            "AND generation_high IS NULL AND code = ANY(:c)"), {"prev": prev, "c": ch.closed})
    rows = []
    for code, geom in ch.replace.items():
        c, chosen = ch.current[code], ch.renames.get(code, {})
        rows.append({"code": code, "parent": c[1], "name": chosen.get("name") or c[2],
                     "rb": chosen.get("responsible_body") or c[3],
                     "wkb": to_multipolygon(as_geom(geom, f"geometry of {code}")).wkb})
    for item in ch.create:
        rows.append({"code": str(item["code"]), "parent": item["parent_code"],
                     "name": item.get("name") or f"网格{str(item['code'])[-3:]}",
                     "rb": item.get("responsible_body") or "居民委员会",
                     "wkb": to_multipolygon(as_geom(item["geometry"], "geometry")).wkb})
    if rows:  # one statement (an executemany is a round trip and a trigger call per row)
        conn.execute(text(
            "INSERT INTO area (level, code, parent_code, name, geom, generation_low, "
            "responsible_body) SELECT 'grid', code, parent, name, "
            "ST_Multi(ST_GeomFromWKB(wkb, 4326)), :gen, rb FROM unnest("
            "CAST(:code AS text[]), CAST(:parent AS text[]), CAST(:name AS text[]), "
            "CAST(:wkb AS bytea[]), CAST(:rb AS text[])) AS t(code, parent, name, wkb, rb)"),
            {"gen": gen, **{k: [r[k] for r in rows]
                            for k in ("code", "parent", "name", "wkb", "rb")}})
    new_set = set(ch.new_codes)
    ch.retired = [c for c in ch.retire if c not in new_set]
    if ch.retired:
        conn.execute(text(
            "INSERT INTO retired_code (code, level, generation_id) "
            "SELECT unnest(CAST(:c AS text[])), 'grid', :g"), {"c": ch.retired, "g": gen})


def _derive_names(create: list[dict[str, Any]]) -> None:
    """Names for new grids that have none: ``source_name`` (the grid they come from) with
    之1, 之2 ... in code (DB11) order when it yields several, else ``网格NNN``."""
    count: dict[str, int] = {}
    for item in create:
        if not item.get("name") and item.get("source_name"):
            count[item["source_name"]] = count.get(item["source_name"], 0) + 1
    seen: dict[str, int] = {}
    for item in sorted(create, key=lambda it: str(it["code"])):
        src = item.get("source_name")
        if item.get("name") or not src:
            continue
        seen[src] = seen.get(src, 0) + 1
        item["name"] = src if count[src] == 1 else f"{src}之{seen[src]}"


SOURCE_SQL = """
SELECT DISTINCT ON (n.code) n.code AS new_code, o.code AS old_code
FROM area n JOIN area o ON o.level = 'grid' AND o.code = ANY(:closed)
     AND o.generation_high = :prev AND ST_Intersects(n.geom, o.geom)
WHERE n.level = 'grid' AND n.generation_low = :g AND n.code = ANY(:new)
ORDER BY n.code, ST_Area(ST_Intersection(n.geom, o.geom)) DESC
"""

TEAM_SQL = """
INSERT INTO grid_team_member (grid_code, role, name, phone)
SELECT t.code, m.role, m.name, m.phone
FROM unnest(CAST(:codes AS text[]), CAST(:ids AS bigint[])) AS t(code, id)
JOIN grid_team_member m ON m.id = t.id
WHERE NOT EXISTS (SELECT 1 FROM grid_team_member x WHERE x.grid_code = t.code)
ORDER BY t.code, m.id
"""


def _teams(conn: Connection, ch: _Change) -> None:
    """New grids carry the 2+5+N team of the closed grid they overlap most, or the members
    the caller chose (``geo.planning.choices.team_assignment``): copied, so the old grid keeps
    its team while it is in force (e.g. until a scheduled change takes effect)."""
    closed = set(ch.closed)
    new = [c for c in ch.new_codes if c not in closed]
    chosen = {str(it["code"]): it["team"] for it in ch.create
              if it.get("team") is not None and str(it["code"]) not in closed}
    ch.parent_team = parent_team(conn, ch.closed)
    if ch.closed and new:
        ch.team_from = dict(conn.execute(text(SOURCE_SQL), {
            "closed": ch.closed, "prev": ch.prev, "g": ch.generation, "new": new}).all())
    pairs = team_assignment(new, ch.team_from, chosen, ch.parent_team)
    if pairs:
        conn.execute(text(TEAM_SQL), {"codes": [p[0] for p in pairs],
                                      "ids": [p[1] for p in pairs]})


def _grid_report(conn: Connection, ch: _Change) -> dict[str, dict[str, Any]]:
    """Per new grid: name, responsible body, where its team came from, the 2+5+N rule."""
    new = sorted(c for c in ch.new_codes if c not in set(ch.closed))
    if not new:
        return {}
    rows = conn.execute(text(
        "SELECT a.code, a.name, a.responsible_body, coalesce(t.leaders, 0) AS leaders, "
        "coalesce(t.cadres, 0) AS cadres, coalesce(t.officer_roles, 0) AS officer_roles, "
        "coalesce(t.workers, 0) AS workers, coalesce(t.complete_2_5_n, false) AS complete "
        "FROM area a LEFT JOIN grid_team_summary t ON t.grid_code = a.code "
        "WHERE a.level = 'grid' AND a.generation_low = :g AND a.code = ANY(:c)"),
        {"g": ch.generation, "c": new}).mappings()
    return {r["code"]: {"name": r["name"], "responsible_body": r["responsible_body"],
                        "team_from": ch.team_from.get(r["code"]),
                        "team": {"leaders": r["leaders"], "cadres": r["cadres"],
                                 "officer_roles": r["officer_roles"], "workers": r["workers"],
                                 "complete_2_5_n": r["complete"]}} for r in rows}


def _buildings_follow(conn: Connection, ch: _Change) -> None:
    """Buildings follow their location into the new or reshaped grids (a building of a closed
    grid lies in one of them unless the cover was broken: the checks catch that)."""
    ch.touched = sorted(set(ch.closed) | set(ch.new_codes))
    ch.communities = sorted({community_code(str(c)) for c in ch.touched}
                            | {community_code(str(c)) for c in ch.reassign.values()})
    if ch.touched:
        ch.moved += conn.execute(text(MOVE_SQL),
                                 {"t": ch.touched, "g": ch.generation}).rowcount or 0


def _reassignments(conn: Connection, ch: _Change) -> None:
    """Buildings reassigned by hand, within their community, to current grids."""
    if not ch.reassign:
        return
    known = building_grids(conn, list(ch.reassign))
    bad = [b for b in ch.reassign if b not in known]
    if bad:
        raise NotFound("unknown buildings", [Problem(reason="no such building",
                                                     field="building", feature=b)
                                             for b in bad])
    targets = set(conn.execute(text(
        "SELECT code FROM area WHERE level = 'grid' AND generation_high IS NULL "
        "AND code = ANY(:c)"), {"c": list(set(ch.reassign.values()))}).scalars())
    wrong = [Problem(reason=f"target grid {g} is not a current grid", field="grid_code",
                     feature=b) for b, g in ch.reassign.items() if g not in targets]
    wrong += [Problem(reason=f"building {b} is in community {community_code(str(known[b]))}, "
                      f"grid {g} in {community_code(g)}: reassign within a community",
                      field="grid_code", feature=b) for b, g in ch.reassign.items()
              if g in targets and known[b]
              and community_code(str(known[b])) != community_code(g)]
    if wrong:
        raise InvalidInput("refused: reassignment targets", wrong)
    for b, g in ch.reassign.items():
        if known[b] != g:
            conn.execute(text(
                "INSERT INTO building_move (generation_id, building_code, from_grid, to_grid)"
                " VALUES (:gen, :b, :f, :t)"),
                {"gen": ch.generation, "b": b, "f": known[b], "t": g})
            conn.execute(text("UPDATE building SET grid_code = :t WHERE code = :b"),
                         {"t": g, "b": b})
            ch.moved += 1
    ch.touched = sorted(set(ch.touched) | set(ch.reassign.values())
                        | {str(v) for v in known.values() if v})


def _checked(conn: Connection, ch: _Change) -> None:
    """Check the affected communities; refuse on any error, keep the warnings."""
    checked = sorted(set(ch.touched) - set(ch.retired))
    errors, warnings = check_communities(conn, ch.communities, checked, ch.settings)
    ch.errors = errors
    if errors and not DRY_RUN.get():
        raise InvalidInput(f"refused {ch.operation}: {len(errors)} check(s) failed; "
                           "nothing was written", errors)
    closed_set = set(ch.closed)
    ch.result = ChangeResult(generation=ch.generation, operation=ch.operation,
                             created=sorted(c for c in ch.new_codes if c not in closed_set),
                             retired=ch.retired, changed=sorted(ch.replace),
                             buildings_moved=ch.moved, warnings=[w.as_dict() for w in warnings],
                             grids=_grid_report(conn, ch))


def _recorded(conn: Connection, ch: _Change) -> None:
    """The change's row in ``planning_change`` (its parameters and summary)."""
    assert ch.result is not None
    conn.execute(text(
        "INSERT INTO planning_change (generation_id, operation, params, summary, actor) "
        "VALUES (:g, :o, CAST(:p AS jsonb), CAST(:s AS jsonb), :a)"),
        {"g": ch.generation, "o": ch.operation, "p": json.dumps(ch.params, default=str),
         "s": json.dumps(ch.result.as_dict(), default=str), "a": default_actor(ch.author)})
    log.info("planning %s: generation %s, created %s, retired %s, changed %s, moved %d",
             ch.operation, ch.generation, ch.result.created, ch.retired, ch.result.changed,
             ch.moved)


# The steps of a change, in order; any may refuse it (the caller's savepoint rolls back).
STEPS: tuple[Callable[[Connection, _Change], None], ...] = (
    _closing, _reviving, _numbering, _versions, _teams, _buildings_follow, _reassignments, _checked,
    _recorded,
)


def _write(conn: Connection, ch: _Change) -> ChangeResult:
    """Run the ``STEPS`` of one change; the result of an accepted one."""
    for step in STEPS:
        step(conn, ch)
    assert ch.result is not None
    if DRY_RUN.get():
        from geo.planning.preview import describe

        ch.result.preview = describe(conn, ch)
    return ch.result
