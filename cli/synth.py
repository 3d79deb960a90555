"""CLI commands for the synthetic city."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import typer

from cli.common import domain_errors

log = logging.getLogger(__name__)


def write_gpkg(layers: dict, path: Path) -> None:
    """Write every layer (grid_team as a table without geometry) to one GeoPackage."""
    import pyogrio

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    for name, frame in layers.items():
        if name == "grid_team":
            pyogrio.write_dataframe(frame, path, layer=name, driver="GPKG")
        else:
            pyogrio.write_dataframe(frame, path, layer=name, driver="GPKG",
                                    spatial_index=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``wangge`` app."""

    @app.command("synth")
    @domain_errors
    def synth(
        grids: int = typer.Option(1000, "--grids", min=1, help="网格数。"),
        buildings: int = typer.Option(50_000, "--buildings", min=1,
                                      help="建筑数（每个网格至少一栋）。"),
        stations: int = typer.Option(500, "--stations", min=0, help="服务站点数。"),
        seed: int = typer.Option(0, "--seed", help="随机种子：种子相同，生成的城市相同。"),
        out: Path | None = typer.Option(None, "--out",
                                        help="同时将各图层写入此 GeoPackage。"),
        no_db: bool = typer.Option(False, "--no-db",
                                   help="不写入数据库（与 --out 合用）。"),
        no_team: bool = typer.Option(False, "--no-team",
                                     help="不生成 2+5+N 网格队伍。"),
        districts: int = typer.Option(
            1, "--districts", min=1,
            help="区数：大于 1 时生成多区城市 3501..， 各区边界"
                 "相接、共用一张步行路网， 网格分布到各区。"),
    ) -> None:
        """生成合成区（福州，350104），写入为新的数据版本。

        网格恰好铺满所在社区，每个网格 150-500 户；步行路网连通（含主干道，河流仅可经桥梁通过）。
        整座城市在一个事务中写入。
        """
        from tqdm import tqdm

        from geo.samples.synth import generate_city

        steps = 1 + (out is not None) + (not no_db)
        bar = tqdm(total=steps, desc="生成合成城市", unit="步")
        t0 = time.perf_counter()
        bar.set_postfix_str("生成中")
        if districts > 1:
            from geo.samples.city import generate_districts

            layers = generate_districts(districts=districts, grids=grids, buildings=buildings,
                                        stations=stations, seed=seed, team=not no_team)
        else:
            layers = generate_city(grids=grids, buildings=buildings, stations=stations,
                                   seed=seed, team=not no_team)
        bar.update(1)
        log.info("generated in %.1f s", time.perf_counter() - t0)
        if out is not None:
            bar.set_postfix_str(f"写入 {out}")
            write_gpkg(layers, out)
            bar.update(1)
            log.info("wrote %s", out)
        generation = None
        if not no_db:
            from cli.common import engine
            from geo.data.store import write_layers

            bar.set_postfix_str("写入数据库")
            eng = engine()
            try:
                with eng.begin() as conn:
                    generation = write_layers(
                        conn, layers, kind="synth",
                        note=f"synth grids={grids} buildings={buildings} stations={stations} "
                             f"seed={seed} districts={districts}",
                    )
            finally:
                eng.dispose()
            bar.update(1)
        bar.close()
        took = time.perf_counter() - t0
        where = f"数据版本 {generation}" if generation is not None else "未写入数据库"
        typer.echo(f"合成城市：{grids} 个网格，{buildings} 栋建筑，{stations} 个站点"
                   f"（{where}），用时 {took:.1f} s")
