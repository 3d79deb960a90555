"""CLI commands for mapping: ``wangge map grids|coverage|incidents --out FILE.html``.

Files written here inline every JS/CSS asset, so they open offline from disk.
"""

from __future__ import annotations

from pathlib import Path

import typer

from cli.common import connection, domain_errors

map_app = typer.Typer(
    help="生成 Leaflet 地图（独立 HTML 文件，可离线打开）。", no_args_is_help=True
)

OUT = typer.Option(..., "--out", "-o", help="输出的 HTML 文件。")
WITHIN = typer.Option(None, "--within", help="仅限此区/街道/社区编码范围内。")


def _write(out: Path, page: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    typer.echo(f"已写入 {out}（{len(page.encode()) / 1e6:.2f} MB）")


@map_app.command("grids")
@domain_errors
def grids_cmd(out: Path = OUT, within: str | None = WITHIN) -> None:
    """网格地图：街道、社区、按户数着色的网格，以及四类路网。"""
    from geo.core.settings import DataSettings
    from geo.data import mapdata
    from maps.base import MapSettings
    from maps.grid_map import grid_map

    s, rule = MapSettings(), DataSettings()
    with connection() as conn:
        inputs = mapdata.grid_map_inputs(conn, within=within, simplify_m=s.map_simplify_m)
    page = grid_map(**inputs, households_min=rule.households_min,
                    households_max=rule.households_max, settings=s, asset_base=None)
    _write(out, page)


@map_app.command("coverage")
@domain_errors
def coverage_cmd(
    out: Path = OUT,
    within: str | None = WITHIN,
    radius_m: float = typer.Option(1000.0, help="服务半径（米）。"),
    kind: str | None = typer.Option(None, help="仅显示此类站点。"),
) -> None:
    """服务覆盖地图：服务圈、未覆盖建筑、各网格未覆盖户数。"""
    from geo.data import mapdata
    from maps.base import MapSettings
    from maps.coverage_map import coverage_map

    s = MapSettings()
    with connection() as conn:
        inputs = mapdata.coverage_inputs(
            conn, radius_m=radius_m, kind=kind, within=within, simplify_m=s.map_simplify_m
        )
    page = coverage_map(**inputs, radius_m=radius_m, settings=s, asset_base=None)
    _write(out, page)


@map_app.command("incidents")
@domain_errors
def incidents_cmd(out: Path = OUT, within: str | None = WITHIN) -> None:
    """案件地图：按状态聚合、标出超期案件、热力图、各网格分级着色。"""
    from geo.data import mapdata
    from maps.base import MapSettings
    from maps.incident_map import incident_map

    s = MapSettings()
    with connection() as conn:
        inputs = mapdata.incident_map_inputs(conn, within=within, simplify_m=s.map_simplify_m)
    page = incident_map(**inputs, settings=s, asset_base=None)
    _write(out, page)


def register(app: typer.Typer) -> None:
    """Add ``wangge map ...`` to the ``wangge`` app."""
    app.add_typer(map_app, name="map")
