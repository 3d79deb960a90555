"""What changed between two generations (grids, buildings, codes), and the lookup refresh
after a committed change."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.core.errors import NotFound, Problem
from geo.lookup import invalidate_index
from geo.planning.changes import community_code


def diff_generations(conn: Connection, g1: int, g2: int) -> dict[str, Any]:
    """What changed between generations ``g1`` and ``g2`` (grids, buildings, codes)."""
    known = set(conn.execute(text("SELECT id FROM generation WHERE id = ANY(:g)"),
                             {"g": [g1, g2]}).scalars())
    miss = [g for g in (g1, g2) if g not in known]
    if miss:
        raise NotFound("no such generation", [Problem(reason="unknown generation",
                                                      field="generation", feature=g)
                                              for g in miss])
    valid = ("a.level = 'grid' AND a.generation_low <= :g "
             "AND coalesce(a.generation_high, 2147483647) >= :g")
    v1: dict[str, int] = dict(conn.execute(text(f"SELECT a.code, a.id FROM area a WHERE {valid}"),
                           {"g": g1}).all())
    v2: dict[str, int] = dict(conn.execute(text(f"SELECT a.code, a.id FROM area a WHERE {valid}"),
                           {"g": g2}).all())
    added = sorted(set(v2) - set(v1))
    removed = sorted(set(v1) - set(v2))
    changed = sorted(c for c in set(v1) & set(v2) if v1[c] != v2[c])
    lo, hi = min(g1, g2), max(g1, g2)
    retired = conn.execute(text(
        "SELECT code FROM retired_code WHERE generation_id > :lo AND generation_id <= :hi "
        "ORDER BY code"), {"lo": lo, "hi": hi}).scalars().all()
    comms = sorted({community_code(c) for c in added + removed + changed})
    moved: dict[str, dict[str, Any]] = {}
    if comms:
        rows = conn.execute(text(f"""
            WITH b AS (SELECT b.code, b.location FROM building b JOIN area c
                       ON c.level = 'community' AND c.code = ANY(:comms)
                       AND c.generation_low <= :g2
                       AND coalesce(c.generation_high, 2147483647) >= :g2
                       AND ST_Intersects(c.geom, b.location))
            SELECT b.code,
              (SELECT a.code FROM area a WHERE {valid.replace(':g', ':g1')}
                AND ST_Intersects(a.geom, b.location) ORDER BY a.code LIMIT 1) AS g1,
              (SELECT a.code FROM area a WHERE {valid.replace(':g', ':g2')}
                AND ST_Intersects(a.geom, b.location) ORDER BY a.code LIMIT 1) AS g2
            FROM b"""), {"comms": comms, "g1": g1, "g2": g2}).all()
        for code, a, b in rows:
            if a != b:
                moved[code] = {"building": code, "from": a, "to": b, "by": "location"}
    for code, f, t in conn.execute(text(
            "SELECT building_code, from_grid, to_grid FROM building_move WHERE generation_id > "
            ":lo AND generation_id <= :hi ORDER BY generation_id, id"), {"lo": lo, "hi": hi}):
        if code not in moved:
            if g1 > g2:
                f, t = t, f
            moved[code] = {"building": code, "from": f, "to": t, "by": "assignment"}
    return {"from_generation": g1, "to_generation": g2, "grids_added": added,
            "grids_removed": removed, "grids_changed": changed,
            "codes_created": added, "codes_retired": list(retired) if g2 > g1 else [],
            "buildings_moved": sorted(moved.values(), key=lambda m: m["building"])}


def refresh_lookup(conn: Connection | None = None) -> None:
    """Ask the in-process lookup index to rebuild on next use (after a committed change)."""
    invalidate_index()


def diff_features(conn: Connection, g1: int, g2: int) -> dict[str, Any]:
    """The diff of ``diff_generations`` as an RFC 7946 FeatureCollection (WGS 84) for a map:
    grids added (their ``g2`` version), removed (their ``g1`` version), changed (``changed`` the
    ``g2`` version, ``changed_before`` the ``g1`` one), and each moved building as a Point
    (``moved``, with from/to grid codes). Properties: change, code, name, generation."""
    d = diff_generations(conn, g1, g2)
    valid = ("level = 'grid' AND generation_low <= :g "
             "AND coalesce(generation_high, 2147483647) >= :g AND code = ANY(:c)")
    want = [(g2, d["grids_added"], "added"), (g1, d["grids_removed"], "removed"),
            (g2, d["grids_changed"], "changed"), (g1, d["grids_changed"], "changed_before")]
    feats: list[dict[str, Any]] = []
    for gen, codes, change in want:
        if not codes:
            continue
        for code, name, gj in conn.execute(text(
                f"SELECT code, name, ST_AsGeoJSON(geom) FROM area WHERE {valid} "
                "ORDER BY code"), {"g": gen, "c": codes}):
            feats.append({"type": "Feature", "geometry": json.loads(gj), "properties": {
                "change": change, "code": code, "name": name, "generation": gen}})
    moves = {m["building"]: m for m in d["buildings_moved"]}
    if moves:
        for code, name, gj in conn.execute(text(
                "SELECT code, name, ST_AsGeoJSON(location) FROM building "
                "WHERE code = ANY(:c) ORDER BY code"), {"c": list(moves)}):
            m = moves[code]
            feats.append({"type": "Feature", "geometry": json.loads(gj), "properties": {
                "change": "moved", "code": code, "name": name, "from": m["from"],
                "to": m["to"], "by": m["by"]}})
    return {"type": "FeatureCollection", "features": feats}
