"""The draft partition's figures for bench/planning: every community of the demo and a sample of
the synthetic city's, by both refinements (own boundary-flip local search and GerryChain's
ReCom). Each draft's households per grid are summed independently from the database's
buildings (shapely point-in-polygon), and each grid's contiguity is checked on its own
polygons: within every piece of the community, the grid is one polygon (±5 cm)."""

from __future__ import annotations

import math
import statistics
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from sqlalchemy import Engine, text

from bench.common import timed
from geo import planning
from geo.planning.balance import bound_of, grid_counts

METHODS = ("flips", "recom")


def _buildings(conn: Any, community: str) -> tuple[gpd.GeoDataFrame, shapely.Geometry]:
    b = gpd.read_postgis(text(
        "SELECT b.households, b.location FROM building b JOIN area a ON a.level = "
        "'community' AND a.code = :c AND a.generation_high IS NULL "
        "AND ST_Intersects(a.geom, b.location)"), conn, geom_col="location",
        params={"c": community})
    wkb = conn.execute(text("SELECT ST_AsBinary(geom) FROM area WHERE level = 'community' "
                            "AND code = :c AND generation_high IS NULL"), {"c": community}).scalar()
    return b, shapely.from_wkb(bytes(wkb))


def contiguous(polys: np.ndarray, community: shapely.Geometry, srid: int) -> bool:
    """Every grid, cut by each piece of the community, is one polygon once ±5 cm slivers close
    (measured in ``srid``, metres); a grid may hold pieces the community itself is split into."""
    s = gpd.GeoSeries(list(polys), crs=4326).to_crs(srid)
    pieces = gpd.GeoSeries(list(getattr(community, "geoms", [community])), crs=4326).to_crs(srid)
    for g in s.values:
        for piece in pieces.values:
            part = shapely.intersection(shapely.make_valid(g), piece.buffer(0.05)).buffer(0.05)
            if part.area > 1.0 and len(getattr(part, "geoms", [part])) > 1:
                return False
    return True


def one_draft(eng: Engine, community: str, settings: planning.PlanningSettings,
              method: str, srid: int) -> dict[str, Any]:
    """A draft of ``community`` by ``method`` with its figures (households summed
    independently)."""
    with eng.connect() as c:
        draft, took = timed(lambda: planning.draft_partition(c, community, settings=settings,
                                                             method=method))
        b, comm = _buildings(c, community)
    polys = draft.grids.geometry.values
    pt, poly = shapely.STRtree(polys).query(b.geometry.values, predicate="intersects")
    hh = np.bincount(poly, weights=b["households"].to_numpy()[pt], minlength=len(polys))
    per_building = np.bincount(pt, minlength=len(b))
    return {"community": community, "s": round(took, 2), "grids": len(polys),
            "units": draft.units, "households": sorted(int(v) for v in hh),
            "ratio": round(float(hh.max() / max(hh.min(), 1)), 4),
            "within_rule": bool(((hh >= settings.households_min)
                                 & (hh <= settings.households_max)).all()),
            "buildings_in_one_grid": bool((per_building == 1).all()),
            "households_preserved": int(hh.sum()) == int(b["households"].sum()),
            "contiguous": contiguous(polys, comm, srid), "links": draft.links,
            "largest_unit": draft.largest_unit,
            "why": why_not(community, b["households"].to_numpy(), settings)}


def subset_sums(values: np.ndarray, cap: int) -> np.ndarray:
    """Which totals 0..``cap`` some subset of the integers ``values`` adds up to."""
    ok = np.zeros(cap + 1, bool)
    ok[0] = True
    for v in (int(x) for x in values):
        if 0 < v <= cap:
            ok[v:] |= ok[: cap + 1 - v].copy()
    return ok


def why_not(community: str, households: np.ndarray,
            settings: planning.PlanningSettings) -> dict[str, Any]:
    """Whether any partition can reach the target, from the buildings alone (indivisible;
    streets and contiguity ignored, so a 'no' is a proof): for each grid count k, the grid
    holding the largest building must hold S households with S in [max(largest, total − (k−1)
    × max), min(max, target × total / (k − 1 + target))] (the others must keep the rule, and
    its smallest neighbour has at most (total − S)/(k − 1)); S − largest must be a sum of other
    buildings."""
    hh = np.sort(np.asarray(households, int))[::-1]
    total, big = int(hh.sum()), int(hh[0])
    lo, hi, target = settings.households_min, settings.households_max, settings.draft_ratio
    out = {}
    for k in grid_counts(total, lo, hi):
        s_lo = max(big, lo, math.ceil(total - (k - 1) * hi), math.ceil(total / k / target))
        s_hi = min(hi, math.floor(target * total / (k - 1 + target))) if k > 1 else total
        sums = subset_sums(hh[1:], max(s_hi - big, 0))
        ok = [s for s in range(s_lo, s_hi + 1) if sums[s - big]]
        out[str(k)] = {"largest_grid_households": [s_lo, s_hi], "possible": len(ok) > 0,
                       "ratio_bound": round(bound_of(big, total, k), 3)}
    return {"community": community, "households": total, "largest_building": big,
            "by_grid_count": out,
            "reachable": any(v["possible"] for v in out.values())}


def dataset(eng: Engine, communities: list[str], settings: planning.PlanningSettings,
            srid: int) -> dict[str, Any]:
    """Both methods over ``communities``: worst ratio (all, and over those that can reach the
    target: ``why_not``), times, and every draft."""
    out: dict[str, Any] = {"communities": len(communities)}
    for method in METHODS:
        rows = [one_draft(eng, c, settings, method, srid) for c in communities]
        hard = [r for r in rows if not r["why"]["reachable"]]
        ok = [r for r in rows if r["why"]["reachable"]]
        out[method] = {
            "worst_ratio": max(r["ratio"] for r in rows),
            "worst_ratio_balanceable": max((r["ratio"] for r in ok), default=None),
            "reached": sum(r["ratio"] <= settings.draft_ratio and r["within_rule"]
                           for r in rows),
            "all_contiguous": all(r["contiguous"] for r in rows),
            "all_households_preserved": all(r["households_preserved"]
                                            and r["buildings_in_one_grid"] for r in rows),
            "total_s": round(sum(r["s"] for r in rows), 1),
            "median_s": round(statistics.median(r["s"] for r in rows), 2),
            "max_s": max(r["s"] for r in rows),
            "cannot_reach": [{**r["why"], "ratio": r["ratio"]} for r in hard],
            "drafts": [{k: v for k, v in r.items() if k != "why"} for r in rows],
        }
        print(f"  {method}: worst {out[method]['worst_ratio']} (balanceable "
              f"{out[method]['worst_ratio_balanceable']}), {out[method]['total_s']} s",
              flush=True)
    return out


def figures(demo: dict[str, Any], synthetic: dict[str, Any], default: str) -> dict[str, Any]:
    """The top-level draft keys of planning.json (``default``: the method drafts use)."""
    return {
        "draft_method": default,
        "draft_max_over_min_households": {
            "demo": demo[default]["worst_ratio_balanceable"],
            "synthetic": synthetic[default]["worst_ratio_balanceable"]},
        "draft_s": {"demo_median": demo[default]["median_s"],
                    "demo_max": demo[default]["max_s"],
                    "synthetic_median": synthetic[default]["median_s"],
                    "synthetic_max": synthetic[default]["max_s"]},
        "draft": {"demo": demo, "synthetic": synthetic},
    }
