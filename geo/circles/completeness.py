"""Life-circle completeness (生活圈完整度) from a distance coverage run's per-building distances.

For each life-circle tier (GB 50180-2018: 5 / 10 / 15 minutes, ``life_circle_m`` metres of
walking), a resident is *served* when every station kind the tier requires
(``life_circle_kinds``) is within the tier's distance of their building. Per district, street
or community: the share of residents served at each tier, each required kind's share of
residents within reach, and the kinds the area lacks (share below ``life_circle_gap_share``).
All sums run in PostgreSQL over ``building_coverage.distance_m`` (arrays aligned with the run's
``params.kinds``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.circles.runs import CircleSettings, get_run
from geo.core.errors import InvalidInput, Problem

LEVEL_LEN = {"district": 6, "street": 9, "community": 12, "grid": 15}

SQL = """
SELECT left(b.grid_code, :n) AS code, k.i AS idx,
       sum(b.residents) AS residents,
       coalesce(sum(b.residents) FILTER (WHERE bc.distance_m[k.i] <= :d), 0) AS reached,
       coalesce(sum(b.residents) FILTER (WHERE (
           SELECT bool_and(coalesce(bc.distance_m[j] <= :d, false))
           FROM unnest(CAST(:idx AS int[])) AS j)), 0) AS served
FROM building_coverage bc
JOIN building b ON b.id = bc.building_id
CROSS JOIN unnest(CAST(:idx AS int[])) AS k(i)
WHERE bc.run_id = :r AND (CAST(:within AS text) IS NULL OR b.grid_code LIKE :within || '%')
GROUP BY 1, 2 ORDER BY 1, 2
"""


def completeness(
    conn: Connection, settings: CircleSettings, run_id: int, level: str = "community",
    within: str | None = None,
) -> list[dict[str, Any]]:
    """Per area of ``level`` (codes starting with ``within``, if given): residents, and per
    tier (minutes) the distance (m), the share of residents served, each required kind's share
    and the kinds lacking."""
    if level not in LEVEL_LEN:
        raise InvalidInput("bad level", [Problem("district, street, community or grid",
                                                 field="level")])
    run = get_run(conn, run_id, "coverage")
    kinds = run["params"].get("kinds")
    if kinds is None:
        raise InvalidInput("not a distance coverage run", [Problem(
            "completeness needs a coverage run with method=distance", field="run_id")])
    areas: dict[str, dict[str, Any]] = {}
    for minutes, dist in sorted(settings.life_circle_m.items(), key=lambda kv: float(kv[0])):
        want = [k for k in settings.life_circle_kinds.get(minutes, []) if k in kinds]
        missing_kinds = [k for k in settings.life_circle_kinds.get(minutes, []) if k not in kinds]
        idx = [kinds.index(k) + 1 for k in want]
        rows = conn.execute(text(SQL), {"n": LEVEL_LEN[level], "d": float(dist), "idx": idx,
                                        "r": run_id, "within": within}).mappings().all() \
            if idx else []
        tiers: dict[str, dict[str, Any]] = {}
        for r in rows:
            t = tiers.setdefault(r["code"], {"residents": int(r["residents"] or 0),
                                            "served": int(r["served"]), "kinds": {}})
            t["kinds"][kinds[r["idx"] - 1]] = int(r["reached"])
        if not idx:  # no kind required (or none known): everyone is served
            for row in conn.execute(text(
                    "SELECT left(b.grid_code, :n), sum(b.residents) FROM building_coverage bc"
                    " JOIN building b ON b.id = bc.building_id WHERE bc.run_id = :r AND"
                    " (CAST(:w AS text) IS NULL OR b.grid_code LIKE :w || '%') GROUP BY 1"),
                    {"n": LEVEL_LEN[level], "r": run_id, "w": within}):
                res = int(row[1] or 0)
                tiers[row[0]] = {"residents": res, "served": res if not missing_kinds else 0,
                               "kinds": {}}
        for code, t in tiers.items():
            a = areas.setdefault(code, {"code": code, "residents": t["residents"], "tiers": {}})
            res = t["residents"]
            share = {k: (round(v / res, 4) if res else None) for k, v in t["kinds"].items()}
            gap = settings.life_circle_gap_share
            a["tiers"][minutes] = {
                "distance_m": float(dist),
                "residents_served": t["served"],
                "share_served": round(t["served"] / res, 4) if res else None,
                "kind_shares": share,
                "missing_kinds": sorted([k for k, v in share.items() if (v or 0) < gap]
                                        + missing_kinds),
            }
    return [areas[c] for c in sorted(areas)]
