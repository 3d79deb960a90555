"""CLI commands for lookup: ``wangge lookup`` (one point) and ``wangge lookup-file`` (many)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cli.common import connection, domain_errors, engine

CHUNK = 100_000


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``wangge`` app."""

    @app.command("lookup")
    @domain_errors
    def lookup_cmd(
        lon: float = typer.Option(..., "--lon", help="经度（度，坐标系见 --crs）。"),
        lat: float = typer.Option(..., "--lat", help="纬度（度，坐标系见 --crs）。"),
        crs: str = typer.Option("wgs84", "--crs",
                               help="坐标系（wgs84 | gcj02 | bd09 | cgcs2000）"),
        at: str = typer.Option(None, "--at", help="YYYY-MM-DD：按当日有效的边界查询。"),
    ) -> None:
        """打印一个点所在的区、街道、社区和网格（含网格队伍）。"""
        from geo.lookup import locate_point

        with connection() as conn:
            res = locate_point(conn, lon, lat, crs=crs, at=at)
        typer.echo(json.dumps(res.as_dict(), ensure_ascii=False, indent=2))

    @app.command("lookup-file")
    @domain_errors
    def lookup_file_cmd(
        src: Path = typer.Argument(..., exists=True, dir_okay=False,
                                   help="点数据：CSV（含 lon、lat 列）、GeoJSON 或 GeoPackage。"),
        dst: Path = typer.Argument(..., help="输出文件：格式同上，按扩展名确定。"),
        crs: str = typer.Option("wgs84", "--crs", help="CSV 坐标的坐标系（自带坐标系的文件"
                                "先转换到 WGS 84）。"),
        at: str = typer.Option(None, "--at", help="YYYY-MM-DD：按当日有效的边界查询。"),
    ) -> None:
        """为每个点添加 grid_code、community_code、street_code 和 lookup_status 列。"""
        import numpy as np
        from tqdm import tqdm

        from geo import lookup
        from geo.core.codes import street_of

        frame, lon, lat, crs = lookup.read_points(src, crs)
        eng = engine()
        n = len(lon)
        grid = np.empty(n, dtype=object)
        status = np.empty(n, dtype=object)
        wlon, wlat = np.empty(n), np.empty(n)
        index = None
        with tqdm(total=n, unit="点", desc="落格查询") as bar:
            for s in range(0, n, CHUNK):
                res = lookup.locate_batch(eng, lon[s:s + CHUNK], lat[s:s + CHUNK], crs=crs,
                                          at=at, max_staleness_ms=60_000)
                index = res["index"]
                grid[s:s + CHUNK] = res["grid_code"]
                wlon[s:s + CHUNK], wlat[s:s + CHUNK] = res["lon"], res["lat"]
                status[s:s + CHUNK] = [lookup.STATUS_NAMES[int(v)] for v in res["status"]]
                bar.update(len(res["status"]))
        eng.dispose()
        out = frame.copy()
        out["grid_code"] = grid
        parent = {g: index.grid_info[i]["parent_code"] for i, g in
                  enumerate(index.grid_codes)} if index else {}
        out["community_code"] = [parent.get(g) if g else None for g in grid]
        out["street_code"] = [street_of(parent[g]) if g and parent.get(g) else None
                              for g in grid]
        out["lookup_status"] = status
        lookup.write_points(out, dst, wlon, wlat)
        ok = int((status == "ok").sum())
        typer.echo(f"共 {n} 个点，{ok} 个落在网格内，已写入 {dst}")
