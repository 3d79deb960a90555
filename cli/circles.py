"""CLI commands for service circles: ``wangge circles``, ``wangge coverage``, ``wangge site``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from cli.common import connection, domain_errors


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``wangge`` app."""

    @app.command("circles")
    @domain_errors
    def circles(
        tiers: list[float] | None = typer.Option(
            None, "--tier", help="Tier in metres of walking (repeatable); default 300/500/1000."),
        clip: str | None = typer.Option(
            None, "--clip", help="community, street, district or none."),
        polygons: str | None = typer.Option(
            None, "--polygons", help="raster (default: contour on a grid) or exact (buffer)."),
    ) -> None:
        """Walking service circles of every station, computed in pgRouting; stores a run."""
        from geo.circles.build import build_circles
        from geo.circles.runs import CircleSettings, get_run

        settings = CircleSettings(**({"circle_polygon_method": polygons} if polygons else {}))
        with connection() as conn:
            rid = build_circles(conn, settings, tiers_m=tiers or None, clip=clip, progress=True)
            summary = get_run(conn, rid)["summary"]
        typer.echo(f"circles run {rid}: {json.dumps(summary, ensure_ascii=False)}")

    @app.command("coverage")
    @domain_errors
    def coverage(
        run: int | None = typer.Option(None, "--run", help="Circles run id (method circles)."),
        tier: float | None = typer.Option(None, "--tier", help="Tier (m); default 300."),
        method: str | None = typer.Option(
            None, "--method", help="distance (default: walking distance from every building to "
            "every station kind) or circles (points in a circles run)."),
        level: str = typer.Option("street", "--level", help="Print per grid/community/street."),
        out: list[Path] | None = typer.Option(
            None, "--out", help="Export uncovered buildings (.geojson or .gpkg; repeatable)."),
        distances: Path | None = typer.Option(
            None, "--distances", help="Export per-building distances (.csv, .geojson, .gpkg)."),
        dask: bool = typer.Option(
            False, "--dask", help="Compute the per-building distances on a Dask cluster "
            "(partitions by district, with a halo of network): the same rows."),
        workers: int = typer.Option(2, "--workers", help="With --dask: LocalCluster processes."),
        scheduler: str | None = typer.Option(
            None, "--scheduler", help="With --dask: scheduler address (tcp://host:8786); "
            "default WANGGE_DASK_SCHEDULER, else a LocalCluster of --workers."),
    ) -> None:
        """Which buildings are covered; residents covered per level; station-kind shares; with
        distances, life-circle completeness (GB 50180) per level and the kinds missing."""
        from geo.circles.completeness import completeness
        from geo.circles.coverage import (
            coverage_by_level,
            distances_frame,
            export_uncovered,
            run_coverage,
        )
        from geo.circles.runs import CircleSettings, get_run

        settings = CircleSettings()
        with connection() as conn:
            if dask:
                rid = _coverage_on_dask(conn, settings, scheduler, workers, run=run, tier=tier,
                                        method=method)
            else:
                rid = run_coverage(conn, settings, circles_run_id=run, tier_m=tier,
                                   method=method)
            s = get_run(conn, rid)["summary"]
            typer.echo(
                f"coverage run {rid}: {s['covered']}/{s['buildings']} buildings, "
                f"{s['residents_covered']}/{s['residents']} residents covered"
            )
            for row in coverage_by_level(conn, rid, level):
                typer.echo(f"  {row['code']}: {row['residents_covered']}/{row['residents']}"
                           f" residents ({row['share_residents_covered']})")
            for k in s["kind_shares"]:
                if "meets_targets" in k:
                    typer.echo(f"  {k['kind']}: communities {k['community_share']} "
                               f"(target {k['community_target']}), streets {k['street_share']} "
                               f"(target {k['street_target']}), meets: {k['meets_targets']}")
            for path in out or []:
                n = export_uncovered(conn, rid, path)
                typer.echo(f"wrote {n} uncovered buildings to {path}")
            if get_run(conn, rid)["params"].get("kinds") is None:
                return
            lv = level if level in ("community", "street", "district") else "community"
            for a in completeness(conn, settings, rid, lv):
                parts = [f"{m}分钟 {t['share_served']}" + (
                    f" 缺 {','.join(t['missing_kinds'])}" if t["missing_kinds"] else "")
                    for m, t in a["tiers"].items()]
                typer.echo(f"  生活圈 {a['code']}: " + "; ".join(parts))
            if distances:
                _, df = distances_frame(conn, rid)
                _write_frame(df, distances)
                typer.echo(f"wrote distances of {len(df)} buildings to {distances}")

    @app.command("site")
    @domain_errors
    def site(
        k: int = typer.Option(5, "--k", help="How many new stations to suggest."),
        run: int | None = typer.Option(None, "--run", help="Coverage run id; default latest."),
        tier: float | None = typer.Option(None, "--tier", help="Walking metres; default the "
                                          "coverage run's tier."),
        kind: str | None = typer.Option(None, "--kind", help="Station kind whose gaps are the "
                                        "demand (distance coverage runs)."),
    ) -> None:
        """Suggest k new station sites covering most uncovered residents (MCLP vs greedy)."""
        from geo.circles.runs import CircleSettings
        from geo.circles.siting import run_siting, sites

        with connection() as conn:
            with typer.progressbar(length=1, label="siting (MCLP)") as bar:
                rid = run_siting(conn, CircleSettings(), k=k, coverage_run_id=run, tier_m=tier,
                                 kind=kind)
                bar.update(1)
            out = sites(conn, rid)
        typer.echo(f"siting run {rid}: {json.dumps(out['summary'], ensure_ascii=False)}")
        for f in out["sites"]["features"]:
            p = f["properties"]
            lon, lat = f["geometry"]["coordinates"]
            typer.echo(f"  {p['method']} #{p['rank']}: node {p['node_id']} ({lon:.6f}, {lat:.6f})"
                       f" +{p['gain_residents']:.0f} residents (total "
                       f"{p['cumulative_residents']:.0f})")


def _coverage_on_dask(conn: Any, settings: Any, scheduler: str | None, workers: int, *,
                      run: int | None, tier: float | None, method: str | None) -> int:
    """``run_coverage`` with the distances on a Dask cluster (``scheduler``, else
    WANGGE_DASK_SCHEDULER, else a LocalCluster of ``workers``) whose workers read the
    database the read-only work uses (the standby when one runs)."""
    from geo.circles.coverage import run_coverage
    from geo.core.db import resolve_read_url
    from geo.core.settings import DatabaseSettings
    from geo.scale.batch import dask_client

    with dask_client(scheduler, workers=workers) as client:
        return run_coverage(conn, settings, circles_run_id=run, tier_m=tier, method=method,
                            dask_client=client,
                            dask_url=resolve_read_url(DatabaseSettings()))


def _write_frame(df, path: Path) -> None:
    """Per-building distances to .csv, or points to .geojson / .gpkg (EPSG:4326)."""
    import geopandas as gpd

    from geo.core.errors import InvalidInput, Problem

    suffix = path.suffix.lower()
    if suffix == ".csv":
        df.to_csv(path, index=False)
        return
    if suffix not in (".geojson", ".json", ".gpkg"):
        raise InvalidInput("unknown export format", [Problem("use .csv, .geojson or .gpkg",
                                                             "distances")])
    gdf = gpd.GeoDataFrame(df, geometry=gpd.points_from_xy(df["lon"], df["lat"]), crs=4326)
    gdf.to_file(path, driver="GPKG" if suffix == ".gpkg" else "GeoJSON")
