"""MCLP siting against brute force, and an end-to-end run on a hand-made network."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from circles_testnet import ORIGIN_M, add_station, make_lattice, to_wgs84
from sqlalchemy import text

from geo.circles.build import build_circles
from geo.circles.coverage import run_coverage
from geo.circles.runs import CircleSettings
from geo.circles.siting import greedy, marginal_gains, run_siting, sites, solve_mclp
from geo.core.errors import InvalidInput

X0, Y0 = ORIGIN_M


def _covered(cover, weights, chosen) -> float:
    return float(weights[cover[:, list(chosen)].any(axis=1)].sum()) if chosen else 0.0


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_mclp_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    cover = rng.random((25, 9)) < 0.22
    weights = rng.integers(1, 100, 25).astype(float)
    for k in (1, 2, 3):
        best = max(_covered(cover, weights, c) for c in itertools.combinations(range(9), k))
        chosen = solve_mclp(cover, weights, k)
        assert len(chosen) <= k
        assert _covered(cover, weights, chosen) == pytest.approx(best)
        assert _covered(cover, weights, greedy(cover, weights, k)) <= best + 1e-9


def test_greedy_can_lose_and_gains_add_up():
    # a classic trap: greedy takes the big middle set, the optimum takes the two halves
    cover = np.array([[1, 1, 0], [1, 1, 0], [1, 0, 1], [1, 0, 1], [0, 1, 0], [0, 0, 1]], bool)
    w = np.ones(6)
    assert _covered(cover, w, greedy(cover, w, 2)) == 5
    opt = solve_mclp(cover, w, 2)
    assert sorted(opt) == [1, 2] and _covered(cover, w, opt) == 6
    gains = marginal_gains(cover, w, opt)
    assert sum(g for _, g in gains) == 6 and gains[0][1] >= gains[1][1]


def test_run_siting_end_to_end(conn):
    """Two uncovered clusters far from the only station: k=2 sites cover both, one each."""
    make_lattice(conn, nx=16, ny=6)
    add_station(conn, "S", X0 + 100, Y0 + 100)
    clusters = {"A": (800.0, 300.0, 40), "B": (1400.0, 200.0, 25)}
    rows = []
    for name, (cx, cy, res) in clusters.items():
        for i, (dx, dy) in enumerate(((0, 10), (30, -10), (-20, 15))):
            lon, lat = to_wgs84(X0 + cx + dx, Y0 + cy + dy)
            rows.append({"c": f"{name}{i}", "lon": lon, "lat": lat, "r": res})
    lon, lat = to_wgs84(X0 + 120, Y0 + 110)
    rows.append({"c": "near", "lon": lon, "lat": lat, "r": 99})
    conn.execute(
        text("INSERT INTO building (code, location, residents) VALUES "
             "(:c, ST_SetSRID(ST_MakePoint(:lon, :lat), 4326), :r)"), rows)
    s = CircleSettings()
    cov = run_coverage(conn, s, circles_run_id=build_circles(conn, s, tiers_m=[300]))
    run = run_siting(conn, s, k=2, coverage_run_id=cov)
    out = sites(conn, run)
    assert out["summary"]["uncovered_residents"] == 3 * 40 + 3 * 25
    mclp = [f for f in out["sites"]["features"] if f["properties"]["method"] == "mclp"]
    assert [f["properties"]["gain_residents"] for f in mclp] == [120, 75]
    assert mclp[-1]["properties"]["cumulative_residents"] == 195
    assert out["summary"]["mclp_residents"] >= out["summary"]["greedy_residents"]
    with pytest.raises(InvalidInput):
        run_siting(conn, s, k=0, coverage_run_id=cov)
