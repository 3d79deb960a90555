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
            None, "--tier", help="步行距离档位（米，可重复）；默认 300/500/1000。"),
        clip: str | None = typer.Option(
            None, "--clip", help="裁剪边界（community | street | district | none）。"),
        polygons: str | None = typer.Option(
            None, "--polygons", help="面生成方法：raster（默认，栅格等值线）或 exact（缓冲区）。"),
    ) -> None:
        """用 pgRouting 计算每个站点的步行服务圈，结果存为一次分析任务。"""
        from geo.circles.build import build_circles
        from geo.circles.runs import CircleSettings, get_run

        settings = CircleSettings(**({"circle_polygon_method": polygons} if polygons else {}))
        with connection() as conn:
            rid = build_circles(conn, settings, tiers_m=tiers or None, clip=clip, progress=True)
            summary = get_run(conn, rid)["summary"]
        typer.echo(f"服务圈任务 {rid}：{json.dumps(summary, ensure_ascii=False)}")

    @app.command("coverage")
    @domain_errors
    def coverage(
        run: int | None = typer.Option(None, "--run", help="服务圈任务编号（circles 方法）。"),
        tier: float | None = typer.Option(None, "--tier", help="步行距离档位（米）；默认 300。"),
        method: str | None = typer.Option(
            None, "--method", help="distance（默认）： 按各建筑到各类站点的"
            "步行距离； circles： 按是否在服务圈任务的服务圈内。"),
        level: str = typer.Option("street", "--level", help="按 grid/community/street 级别打印。"),
        out: list[Path] | None = typer.Option(
            None, "--out", help="导出未覆盖建筑（.geojson 或 .gpkg；可重复）。"),
        distances: Path | None = typer.Option(
            None, "--distances", help="导出每栋建筑的步行距离（.csv | .geojson | .gpkg）。"),
        dask: bool = typer.Option(
            False, "--dask", help="在 Dask 集群上计算每栋建筑的距离： "
            "按区分块并带路网缓冲带， 结果与单进程完全相同。"),
        workers: int = typer.Option(2, "--workers", help="LocalCluster 进程数（与 --dask 合用）。"),
        scheduler: str | None = typer.Option(
            None, "--scheduler", help="调度器地址（tcp://host:8786，与 --dask 合用）；"
            "默认 WANGGE_DASK_SCHEDULER， 未设置则用 --workers 个进程的 LocalCluster。"),
    ) -> None:
        """服务覆盖分析：哪些建筑被覆盖、各级覆盖居民数、各类站点覆盖率。

        distance 方法另按级别给出生活圈完整度（GB 50180）及缺少的站点类型。"""
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
                f"覆盖分析任务 {rid}：已覆盖建筑 {s['covered']}/{s['buildings']}，"
                f"已覆盖居民 {s['residents_covered']}/{s['residents']}"
            )
            for row in coverage_by_level(conn, rid, level):
                typer.echo(f"  {row['code']}：居民 {row['residents_covered']}/{row['residents']}"
                           f"（{row['share_residents_covered']}）")
            for k in s["kind_shares"]:
                if "meets_targets" in k:
                    typer.echo(f"  {k['kind']}：社区 {k['community_share']}"
                               f"（目标 {k['community_target']}），街道 {k['street_share']}"
                               f"（目标 {k['street_target']}），达标：{k['meets_targets']}")
            for path in out or []:
                n = export_uncovered(conn, rid, path)
                typer.echo(f"已将 {n} 栋未覆盖建筑写入 {path}")
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
                typer.echo(f"已将 {len(df)} 栋建筑的步行距离写入 {distances}")

    @app.command("site")
    @domain_errors
    def site(
        k: int = typer.Option(5, "--k", help="建议新增的站点数。"),
        run: int | None = typer.Option(None, "--run", help="覆盖分析任务编号；默认最新一次。"),
        tier: float | None = typer.Option(None, "--tier", help="步行距离（米）；默认取"
                                          "覆盖分析任务的档位。"),
        kind: str | None = typer.Option(None, "--kind", help="以该类站点的覆盖缺口作为需求"
                                        "（distance 方法的覆盖分析任务）。"),
    ) -> None:
        """建议 k 个新站点位置，覆盖尽可能多的未覆盖居民（MCLP 与贪心算法对比）。"""
        from geo.circles.runs import CircleSettings
        from geo.circles.siting import run_siting, sites

        with connection() as conn:
            with typer.progressbar(length=1, label="选址计算（MCLP）") as bar:
                rid = run_siting(conn, CircleSettings(), k=k, coverage_run_id=run, tier_m=tier,
                                 kind=kind)
                bar.update(1)
            out = sites(conn, rid)
        typer.echo(f"选址任务 {rid}：{json.dumps(out['summary'], ensure_ascii=False)}")
        for f in out["sites"]["features"]:
            p = f["properties"]
            lon, lat = f["geometry"]["coordinates"]
            typer.echo(f"  {p['method']} #{p['rank']}：节点 {p['node_id']}（{lon:.6f}, {lat:.6f}）"
                       f" 新增覆盖居民 {p['gain_residents']:.0f}（累计 "
                       f"{p['cumulative_residents']:.0f}）")


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
        raise InvalidInput("未知的导出格式", [Problem("请使用 .csv、.geojson 或 .gpkg",
                                                             "distances")])
    gdf = gpd.GeoDataFrame(df, geometry=gpd.points_from_xy(df["lon"], df["lat"]), crs=4326)
    gdf.to_file(path, driver="GPKG" if suffix == ".gpkg" else "GeoJSON")
