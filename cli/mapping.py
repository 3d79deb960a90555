"""CLI commands for mapping: ``wangge map grids|coverage|incidents --out FILE.html``.

Files written here inline every JS/CSS asset, so they open offline from disk.
"""

from __future__ import annotations

from pathlib import Path

import typer

from cli.common import connection, domain_errors

map_app = typer.Typer(
    help="Write Leaflet maps (standalone HTML, works offline).", no_args_is_help=True
)

OUT = typer.Option(..., "--out", "-o", help="HTML file to write.")
WITHIN = typer.Option(None, "--within", help="Only under this district/street/community code.")


def _write(out: Path, page: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    typer.echo(f"wrote {out} ({len(page.encode()) / 1e6:.2f} MB)")


@map_app.command("grids")
@domain_errors
def grids_cmd(out: Path = OUT, within: str | None = WITHIN) -> None:
    """Grid map: streets, communities, grids by household load, the four networks."""
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
    radius_m: float = typer.Option(1000.0, help="Service radius, metres."),
    kind: str | None = typer.Option(None, help="Only stations of this kind."),
) -> None:
    """Coverage map: service circles, uncovered buildings, per-grid uncovered households."""
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
    """Incident map: clusters by status, overdue marked, heat map, per-grid choropleths."""
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
