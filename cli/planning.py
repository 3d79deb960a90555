"""CLI commands for planning: ``wangge grid split|merge|reshape|reassign|import|diff|draft|accept``
and ``wangge grid undo|cancel`` (the history of a district's grids).

Geometry files are GeoJSON (a geometry, Feature or FeatureCollection) or WKT, in WGS 84 (lon,
lat). Each accepted change prints the new generation as JSON; a refused one prints what failed,
where and by how much, and exits 1 with the database unchanged.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from cli.common import connection, domain_errors, print_json
from cli.data import FIELD_HELP, MAP_HELP, pairs, report_read
from geo.core.errors import InvalidInput, Problem

grid_app = typer.Typer(help="网格调整：拆分、合并、调整边界、调整楼栋归属、导入图层，"
                       " 比较版本、生成划分草案，撤销或取消变更。",
                       no_args_is_help=True)

EFFECTIVE = typer.Option(None, "--effective-from", help="变更生效时间"
                         "（ISO 8601，如 2026-01-01）；默认立即生效。")


def _settings() -> Any:
    from geo.planning import PlanningSettings

    return PlanningSettings()


def _read_geometry(path: Path, what: str) -> Any:
    """The geometry in ``path``: GeoJSON (geometry, Feature, one-feature collection) or WKT."""
    raw = path.read_text(encoding="utf-8").strip()
    if raw.startswith("{"):
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{what}：不是有效的 JSON", [Problem(reason=str(exc), field=what,
                                                             feature=str(path))]) from exc
        if obj.get("type") == "FeatureCollection":
            feats = obj.get("features") or []
            if len(feats) != 1:
                raise InvalidInput(f"{what}：须恰好包含一个要素", [Problem(
                    reason=f"该要素集合包含 {len(feats)} 个要素", field=what,
                    feature=str(path))])
            obj = feats[0]
        return obj.get("geometry", obj) if obj.get("type") == "Feature" else obj
    return raw


def _done(res: Any) -> None:
    from geo.planning import refresh_lookup

    refresh_lookup()
    print_json(res.as_dict())


@grid_app.command("split")
@domain_errors
def split_cmd(
    code: str = typer.Argument(..., help="要拆分的网格编码（15 位）。"),
    line: Path = typer.Option(..., "--line", exists=True, dir_okay=False,
                              help="GeoJSON 或 WKT 文件：一条从边到边横穿网格的分割线。"),
    effective_from: datetime | None = EFFECTIVE,
) -> None:
    """沿分割线拆分网格；拆出的网格获得新的 DB11 编码，原编码注销。"""
    from geo.planning import split_grid

    geom = _read_geometry(line, "line")
    with connection() as conn:
        res = split_grid(conn, code, geom, effective_from=effective_from, settings=_settings())
    _done(res)


@grid_app.command("merge")
@domain_errors
def merge_cmd(
    codes: list[str] = typer.Argument(..., help="同一社区内两个或以上相邻网格。"),
    effective_from: datetime | None = EFFECTIVE,
) -> None:
    """将相邻网格合并为一个新网格（新的 DB11 编码；原编码注销）。"""
    from geo.planning import merge_grids

    with connection() as conn:
        res = merge_grids(conn, codes, effective_from=effective_from, settings=_settings())
    _done(res)


@grid_app.command("reshape")
@domain_errors
def reshape_cmd(
    code: str = typer.Argument(..., help="要调整边界的网格编码。"),
    file: Path = typer.Argument(..., exists=True, dir_okay=False,
                                help="GeoJSON 或 WKT 文件：网格的新边界面。"),
    effective_from: datetime | None = EFFECTIVE,
) -> None:
    """替换一个网格的边界（编码不变）。相邻网格需随之让出时，请用 ``import``。"""
    from geo.planning import reshape_grids

    geom = _read_geometry(file, "geometry")
    with connection() as conn:
        res = reshape_grids(conn, {code: geom}, effective_from=effective_from,
                            settings=_settings())
    _done(res)


@grid_app.command("reassign")
@domain_errors
def reassign_cmd(
    building: str = typer.Argument(..., help="建筑编码。"),
    grid: str = typer.Argument(..., help="同一社区内的目标网格编码。"),
    effective_from: datetime | None = EFFECTIVE,
) -> None:
    """将一栋建筑调整到本社区的另一个网格。"""
    from geo.planning import reassign_buildings

    with connection() as conn:
        res = reassign_buildings(conn, {building: grid}, effective_from=effective_from,
                                 settings=_settings())
    _done(res)


@grid_app.command("import")
@domain_errors
def import_cmd(
    file: Path = typer.Argument(..., exists=True, help="GeoPackage、Shapefile 或 GeoJSON 文件。"),
    community: str | None = typer.Option(None, "--community", help="仅替换此社区"
                                         "网格（默认全区）。"),
    layer: str | None = typer.Option(None, "--layer", help="要读取的图层（默认 'grid'、"
                                     "'grids'、'网格' 或文件中唯一的图层）。"),
    layer_map: list[str] | None = typer.Option(None, "--map", help=MAP_HELP),
    field_map: list[str] | None = typer.Option(None, "--field", help=FIELD_HELP),
    snap: float | None = typer.Option(
        None, "--snap", min=0, help="吸附距离（米），如 0.5： 网格吸附到"
        "所属社区边界， 并打印被移动的要素。"),
    effective_from: datetime | None = EFFECTIVE,
) -> None:
    """将重新划分的网格图层作为一次变更导入。

    未变的网格保留，有变化的生成新版本，缺失的注销，无编码的行分配 DB11 编码。"""
    from geo.planning import import_grid_layer

    with connection() as conn:
        res = import_grid_layer(conn, file, community=community, layer=layer,
                                layer_map=pairs(layer_map, "--map"),
                                field_map=pairs(field_map, "--field"), snap_m=snap,
                                effective_from=effective_from, settings=_settings())
    report_read(res.source.get("renamed", []), res.source.get("snapped", []))
    _done(res)


@grid_app.command("diff")
@domain_errors
def diff_cmd(
    from_generation: int = typer.Argument(..., metavar="FROM", help="较早的版本号。"),
    to_generation: int = typer.Argument(..., metavar="TO", help="较晚的版本号。"),
) -> None:
    """比较两个版本：网格的增删改、编码的新建与注销、建筑的迁移。"""
    from geo.planning import diff_generations

    with connection() as conn:
        print_json(diff_generations(conn, from_generation, to_generation))


@grid_app.command("undo")
@domain_errors
def undo_cmd(
    generation: int = typer.Argument(..., help="本区最近一次网格调整的版本号。"),
    effective_from: datetime | None = EFFECTIVE,
) -> None:
    """撤销一次变更：生成新版本，将网格（连同原编码）恢复到变更之前。

    该变更新建的编码保持注销。"""
    from geo.planning.history import undo_generation

    with connection() as conn:
        res = undo_generation(conn, generation, effective_from=effective_from,
                              settings=_settings())
    _done(res)


@grid_app.command("cancel")
@domain_errors
def cancel_cmd(
    generation: int = typer.Argument(..., help="尚未生效的计划变更的版本号。"),
) -> None:
    """取消计划中的变更（整体删除，记入审计日志）。"""
    from geo.planning import refresh_lookup
    from geo.planning.history import cancel_generation

    with connection() as conn:
        out = cancel_generation(conn, generation)
    refresh_lookup()
    print_json(out)


@grid_app.command("draft")
@domain_errors
def draft_cmd(
    community: str = typer.Argument(..., help="社区编码（12 位）。"),
    out: Path | None = typer.Option(None, "--out", "-o", help="将草案网格写入此 GeoJSON "
                                    "文件（默认：只打印摘要）。"),
) -> None:
    """沿道路生成户数均衡的网格划分草案，不写入数据库。

    以街坊为单元：生成树取初始划分，再以边界翻转做局部搜索。用 ``wangge grid accept`` 采纳。"""
    from tqdm import tqdm

    from geo.planning import draft_partition

    with tqdm(desc="生成草案（尝试）", unit="次") as bar, connection() as conn:

        def tick(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        draft = draft_partition(conn, community, settings=_settings(), progress=tick)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(draft.as_geojson(), ensure_ascii=False), encoding="utf-8")
    print_json({"community": community, "grids": len(draft.grids), "blocks": draft.blocks,
                "households": draft.grids["households"].astype(int).tolist(),
                "ratio": round(draft.ratio, 3), "out": str(out) if out else None})


@grid_app.command("accept")
@domain_errors
def accept_cmd(
    community: str = typer.Argument(..., help="草案所划分的社区编码。"),
    file: Path = typer.Argument(..., exists=True, dir_okay=False,
                                help="草案 GeoJSON 文件（由 ``wangge grid draft --out`` 生成）。"),
    effective_from: datetime | None = EFFECTIVE,
) -> None:
    """将草案作为一次变更采纳：以草案网格替换该社区网格，并分配新的 DB11 编码。"""
    from geo.planning import accept_draft

    try:
        fc = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InvalidInput("草案不是有效的 JSON", [Problem(reason=str(exc), field="FILE",
                                                             feature=str(file))]) from exc
    with connection() as conn:
        res = accept_draft(conn, community, fc, effective_from=effective_from,
                           settings=_settings())
    _done(res)


def register(app: typer.Typer) -> None:
    """Add ``wangge grid`` to the ``wangge`` app."""
    app.add_typer(grid_app, name="grid")
