"""Where new stations help most: a maximal covering location problem on network distances.

Demand is the residents of the buildings a coverage run left uncovered, gathered at each
building's nearest walk node. Candidate sites are those demand nodes, thinned to the heaviest
node per ``siting_candidate_cell_m`` cell and capped at ``siting_max_candidates``. Network
distances from every candidate come from one ``pgr_drivingDistance`` call (undirected, metres,
cut at the tier, on the edges inside the demand's box; barrier-crossing edges excluded as for
the circles). spopt's MCLP picks k sites; each site's marginal gain is reported in the order
that adds most first, and a greedy baseline is solved and stored alongside.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.circles.build import BLOCKED_SQL
from geo.circles.runs import (
    CircleSettings,
    claim_run,
    finish_run,
    get_run,
    latest_run,
    metric_srid,
)
from geo.core.errors import InvalidInput, Problem

log = logging.getLogger(__name__)

DEMAND_SQL = """
CREATE TEMP TABLE _st_demand ON COMMIT DROP AS
SELECT n.id AS node, sum(b.residents)::float8 AS w, min(n.geom) AS geom
FROM building_coverage bc JOIN building b ON b.id = bc.building_id
CROSS JOIN LATERAL (SELECT wn.id, wn.geom FROM walk_node wn
                    ORDER BY wn.geom <-> b.location LIMIT 1) n
WHERE bc.run_id = :r AND b.residents > 0
  AND CASE WHEN CAST(:kidx AS int) IS NULL THEN NOT bc.covered
           ELSE coalesce(bc.distance_m[CAST(:kidx AS int)] > :tier, true) END
GROUP BY n.id;
CREATE TEMP TABLE _st_cand ON COMMIT DROP AS
SELECT node FROM (
    SELECT DISTINCT ON (cx, cy) node, w FROM (
        SELECT node, w, floor(ST_X(ST_Transform(geom, :srid)) / :cell) AS cx,
               floor(ST_Y(ST_Transform(geom, :srid)) / :cell) AS cy FROM _st_demand) d
    ORDER BY cx, cy, w DESC, node) t
ORDER BY w DESC, node LIMIT :maxc;
CREATE TEMP TABLE _st_box ON COMMIT DROP AS
SELECT ST_Envelope(ST_Transform(ST_SetSRID(
           ST_Expand(ST_Extent(ST_Transform(geom, :srid)), :tier)::geometry, :srid), 4326)) AS bbox
FROM _st_demand;
"""

DIST_SQL = """
SELECT d.from_v, d.node, d.agg_cost
FROM pgr_drivingDistance(
    'SELECT e.id, e.source, e.target, e.length_m AS cost, e.length_m AS reverse_cost
     FROM walk_edge e, _st_box b WHERE e.geom && b.bbox
     AND NOT EXISTS (SELECT 1 FROM _cs_blocked x WHERE x.edge_id = e.id)',
    (SELECT array_agg(node ORDER BY node) FROM _st_cand), :tier, directed => false) d
JOIN _st_demand m ON m.node = d.node
"""


def solve_mclp(cover: np.ndarray, weights: np.ndarray, k: int) -> list[int]:
    """Facilities (column indices) chosen by spopt's MCLP; ``cover`` is clients × facilities."""
    import pulp
    from spopt.locate import MCLP

    cost = np.where(cover, 0.0, 2.0)
    with warnings.catch_warnings():  # PuLP 3 deprecation chatter about its 4.0 API
        warnings.simplefilter("ignore", DeprecationWarning)
        model = MCLP.from_cost_matrix(cost, np.asarray(weights, float), 1.0, p_facilities=k)
        model.solve(pulp.PULP_CBC_CMD(msg=False))
    return [j for j, v in enumerate(model.fac_vars) if v.value() and v.value() > 0.5]


def greedy(cover: np.ndarray, weights: np.ndarray, k: int) -> list[int]:
    """Greedy baseline: repeatedly the facility that covers the most not-yet-covered weight."""
    covered = np.zeros(cover.shape[0], bool)
    chosen: list[int] = []
    for _ in range(min(k, cover.shape[1])):
        gains = (cover & ~covered[:, None]).T.astype(float) @ weights
        gains[chosen] = -1
        j = int(np.argmax(gains))
        if gains[j] <= 0:
            break
        chosen.append(j)
        covered |= cover[:, j]
    return chosen


def marginal_gains(
    cover: np.ndarray, weights: np.ndarray, sites: list[int]
) -> list[tuple[int, float]]:
    """Order ``sites`` by what each adds given those before it; (site, gain) pairs."""
    covered = np.zeros(cover.shape[0], bool)
    left, out = list(sites), []
    while left:
        gains = [float(weights[cover[:, j] & ~covered].sum()) for j in left]
        i = int(np.argmax(gains))
        j = left.pop(i)
        out.append((j, gains[i]))
        covered |= cover[:, j]
    return out


def run_siting(
    conn: Connection,
    settings: CircleSettings,
    *,
    k: int = 5,
    coverage_run_id: int | None = None,
    tier_m: float | None = None,
    kind: str | None = None,
    run_id: int | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> int:
    """Suggest ``k`` new sites covering most uncovered residents within ``tier_m`` metres.

    With a distance coverage run, the demand is the life-circle gap of one station ``kind``:
    residents with no station of that kind within the tier (default: the kind the tier's
    life circle requires that leaves the most residents out). With a circles coverage run it
    is the residents of uncovered buildings. ``run_id``: a queued run to fill.
    """
    if not 1 <= k <= 200:
        raise InvalidInput("bad k", [Problem("k must be between 1 and 200", field="k")])
    cov = coverage_run_id or latest_run(conn, "coverage")
    cov_run = get_run(conn, cov, "coverage")
    tier = float(tier_m if tier_m is not None else cov_run["params"]["tier_m"])
    if not 0 < tier <= 5000:
        raise InvalidInput("bad tier", [Problem("tier_m must be in (0, 5000]", field="tier_m")])
    kinds = cov_run["params"].get("kinds")
    kidx = None
    if kinds is not None:
        kind = kind or _widest_gap(conn, settings, cov, kinds, tier)
        if kind not in kinds:
            raise InvalidInput("unknown kind", [Problem(f"one of {kinds}", field="kind")])
        kidx = kinds.index(kind) + 1  # PostgreSQL arrays count from 1
    elif kind is not None:
        raise InvalidInput("coverage run has no distances", [Problem(
            "a kind needs a distance coverage run", field="kind")])
    params = {"k": k, "coverage_run_id": cov, "tier_m": tier, "kind": kind}
    run_id = claim_run(conn, run_id, "siting", params, cov)
    srid = metric_srid(conn)
    conn.execute(text("DROP TABLE IF EXISTS _cs_blocked"))
    conn.execute(text(BLOCKED_SQL), {"kinds": list(settings.circle_barrier_kinds)})
    conn.execute(
        text(DEMAND_SQL),
        {"r": cov, "srid": srid, "cell": settings.siting_candidate_cell_m,
         "maxc": settings.siting_max_candidates, "tier": tier, "kidx": kidx},
    )
    if on_progress:
        on_progress(0.3)
    demand = conn.execute(text("SELECT node, w FROM _st_demand ORDER BY node")).all()
    cands = [r[0] for r in conn.execute(text("SELECT node FROM _st_cand ORDER BY node"))]
    summary: dict[str, Any] = {"demand_nodes": len(demand), "candidates": len(cands),
                               "uncovered_residents": float(sum(w for _, w in demand)),
                               "demand": f"residents without {kind} within {tier} m"
                               if kind else "residents of uncovered buildings"}
    if demand and cands:
        di = {n: i for i, (n, _) in enumerate(demand)}
        ci = {n: j for j, n in enumerate(cands)}
        cover = np.zeros((len(demand), len(cands)), bool)
        for f, n, d in conn.execute(text(DIST_SQL), {"tier": tier}):
            if d <= tier:
                cover[di[n], ci[f]] = True
        weights = np.array([w for _, w in demand], float)
        kk = min(k, len(cands))
        for method, sites in (("mclp", solve_mclp(cover, weights, kk)),
                              ("greedy", greedy(cover, weights, kk))):
            total = 0.0
            rows = []
            for rank, (j, gain) in enumerate(marginal_gains(cover, weights, sites), start=1):
                total += gain
                rows.append({"run": run_id, "m": method, "rank": rank, "node": cands[j],
                             "gain": gain, "cum": total})
            if rows:
                conn.execute(
                    text(
                        "INSERT INTO site_suggestion (run_id, method, rank, node_id,"
                        " gain_residents, cumulative_residents, geom)"
                        " SELECT :run, :m, :rank, :node, :gain, :cum, geom"
                        " FROM walk_node WHERE id = :node"
                    ),
                    rows,
                )
            summary[f"{method}_residents"] = total
        base = summary.get("greedy_residents", 0.0)
        summary["mclp_vs_greedy"] = (
            round(summary.get("mclp_residents", 0.0) / base, 4) if base else None
        )
    conn.execute(text("DROP TABLE IF EXISTS _st_demand, _st_cand, _st_box, _cs_blocked"))
    finish_run(conn, run_id, summary, params, cov)
    return run_id


def _widest_gap(conn: Connection, settings: CircleSettings, cov: int, kinds: list[str],
                tier: float) -> str:
    """The kind, among those the life circle of ``tier`` (m) requires (all kinds when no tier
    matches), that leaves the most residents without one within ``tier``."""
    want = [k for m, d in settings.life_circle_m.items() if float(d) == tier
            for k in settings.life_circle_kinds.get(m, [])]
    cand = [k for k in (want or kinds) if k in kinds]
    if not cand:
        raise InvalidInput("no kind to site", [Problem("give a kind", field="kind")])
    gaps = conn.execute(
        text("SELECT k.i, sum(b.residents) FILTER (WHERE coalesce(bc.distance_m[k.i] > :t, true))"
             " FROM building_coverage bc JOIN building b ON b.id = bc.building_id"
             " CROSS JOIN unnest(CAST(:idx AS int[])) AS k(i)"
             " WHERE bc.run_id = :r GROUP BY k.i"),
        {"t": tier, "idx": [kinds.index(c) + 1 for c in cand], "r": cov},
    ).all()
    best = max(gaps, key=lambda g: (g[1] or 0, -g[0]))
    return str(kinds[best[0] - 1])


def sites(conn: Connection, run_id: int) -> dict[str, Any]:
    """A siting run's suggestions as an RFC 7946 FeatureCollection plus the run summary."""
    run = get_run(conn, run_id, "siting")
    fc = conn.execute(
        text(
            "SELECT json_build_object('type', 'FeatureCollection', 'features',"
            " coalesce(json_agg(json_build_object('type', 'Feature', 'id', id,"
            "  'geometry', ST_AsGeoJSON(geom, 7)::json, 'properties', json_build_object("
            "  'method', method, 'rank', rank, 'node_id', node_id,"
            "  'gain_residents', gain_residents, 'cumulative_residents', cumulative_residents))"
            "  ORDER BY method, rank), '[]'::json))"
            " FROM site_suggestion WHERE run_id = :r"
        ),
        {"r": run_id},
    ).scalar_one()
    return {"run_id": run_id, "summary": run["summary"], "sites": fc}
