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
SELECT left(b.grid_code, :n) AS code, sum(b.residents) AS residents, {sums}
FROM building_coverage bc
JOIN building_now b ON b.id = bc.building_id
WHERE bc.run_id = :r AND (CAST(:within AS text) IS NULL OR b.grid_code LIKE :within || '%')
GROUP BY 1 ORDER BY 1
"""


def _sums(tiers: list[tuple[list[int], bool]]) -> str:
    """The SELECT list of one scan for every tier: residents served (every required kind within
    ``:d<t>`` m) and, per required kind, residents within reach of it. Only integers (array
    positions and tier numbers from this module) are written into the SQL."""
    cols = []
    for t, (idx, missing) in enumerate(tiers):
        # kinds the run does not know are left out of "every kind", unless none is known
        cond = " AND ".join(f"bc.distance_m[{int(i)}] <= :d{t}" for i in idx) or (
            "FALSE" if missing else "TRUE")
        cols.append(f"coalesce(sum(b.residents) FILTER (WHERE {cond}), 0) AS s{t}")
        cols += [f"coalesce(sum(b.residents) FILTER (WHERE bc.distance_m[{int(i)}] <= :d{t}), 0)"
                 f" AS r{t}_{int(i)}" for i in idx]
    return ", ".join(cols)


def completeness(
    conn: Connection, settings: CircleSettings, run_id: int, level: str = "community",
    within: str | None = None,
) -> list[dict[str, Any]]:
    """Per area of ``level`` (codes starting with ``within``, if given): residents, and per
    tier (minutes) the distance (m), the share of residents served, each required kind's share
    and the kinds lacking. One scan of the run's distances for all tiers."""
    if level not in LEVEL_LEN:
        raise InvalidInput("bad level", [Problem("district, street, community or grid",
                                                 field="level")])
    run = get_run(conn, run_id, "coverage")
    kinds = run["params"].get("kinds")
    if kinds is None:
        raise InvalidInput("not a distance coverage run", [Problem(
            "completeness needs a coverage run with method=distance", field="run_id")])
    tiers = sorted(settings.life_circle_m.items(), key=lambda kv: float(kv[0]))
    plan = []
    for minutes, _ in tiers:
        required = settings.life_circle_kinds.get(minutes, [])
        plan.append(([kinds.index(k) + 1 for k in required if k in kinds],
                     [k for k in required if k not in kinds]))
    rows = conn.execute(
        text(SQL.format(sums=_sums([(idx, bool(miss)) for idx, miss in plan]))),
        {"n": LEVEL_LEN[level], "r": run_id, "within": within,
         **{f"d{t}": float(dist) for t, (_, dist) in enumerate(tiers)}},
    ).mappings().all()
    gap = settings.life_circle_gap_share
    out = []
    for r in rows:
        res = int(r["residents"] or 0)
        a: dict[str, Any] = {"code": r["code"], "residents": res, "tiers": {}}
        for t, ((minutes, dist), (idx, missing_kinds)) in enumerate(zip(tiers, plan,
                                                                        strict=True)):
            served = int(r[f"s{t}"])
            share = {kinds[i - 1]: (round(int(r[f"r{t}_{i}"]) / res, 4) if res else None)
                     for i in idx}
            a["tiers"][minutes] = {
                "distance_m": float(dist),
                "residents_served": served,
                "share_served": round(served / res, 4) if res else None,
                "kind_shares": share,
                "missing_kinds": sorted([k for k, v in share.items() if (v or 0) < gap]
                                        + missing_kinds),
            }
        out.append(a)
    return out
