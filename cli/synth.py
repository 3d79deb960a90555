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
        grids: int = typer.Option(1000, "--grids", min=1, help="Number of grids (网格)."),
        buildings: int = typer.Option(50_000, "--buildings", min=1,
                                      help="Number of buildings (at least one per grid)."),
        stations: int = typer.Option(500, "--stations", min=0, help="Number of service stations."),
        seed: int = typer.Option(0, "--seed", help="Random seed: same seed, same city."),
        out: Path | None = typer.Option(None, "--out",
                                        help="Also write the layers to this GeoPackage."),
        no_db: bool = typer.Option(False, "--no-db",
                                   help="Do not write to the database (use with --out)."),
        no_team: bool = typer.Option(False, "--no-team",
                                     help="Skip the 2+5+N grid team rows."),
        districts: int = typer.Option(
            1, "--districts", min=1,
            help="Districts (区): more than 1 makes a city (3501..) of districts with shared "
                 "borders and one walking network, grids split among them."),
    ) -> None:
        """Generate a synthetic district (Fuzhou, 350104) and write it as a new generation.

        Grids tile their communities exactly, households per grid stay within 150-500, the
        walking network is connected (arterials, a river crossed only at bridges). The whole
        city is written in one transaction.
        """
        from tqdm import tqdm

        from geo.samples.synth import generate_city

        steps = 1 + (out is not None) + (not no_db)
        bar = tqdm(total=steps, desc="synth", unit="step")
        t0 = time.perf_counter()
        bar.set_postfix_str("generating")
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
            bar.set_postfix_str(f"writing {out}")
            write_gpkg(layers, out)
            bar.update(1)
            log.info("wrote %s", out)
        generation = None
        if not no_db:
            from cli.common import engine
            from geo.data.store import write_layers

            bar.set_postfix_str("writing database")
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
        where = f"generation {generation}" if generation is not None else "no database write"
        typer.echo(f"synthetic city: {grids} grids, {buildings} buildings, {stations} stations "
                   f"({where}) in {took:.1f} s")
