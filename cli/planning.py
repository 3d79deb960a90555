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

grid_app = typer.Typer(help="Redraw grids (网格): split, merge, reshape, reassign, import a "
                       "layer, diff generations, draft a partition, undo or cancel a change.",
                       no_args_is_help=True)

EFFECTIVE = typer.Option(None, "--effective-from", help="When the change takes effect "
                         "(ISO 8601, e.g. 2026-01-01); default now.")


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
            raise InvalidInput(f"{what}: not JSON", [Problem(reason=str(exc), field=what,
                                                             feature=str(path))]) from exc
        if obj.get("type") == "FeatureCollection":
            feats = obj.get("features") or []
            if len(feats) != 1:
                raise InvalidInput(f"{what}: need exactly one feature", [Problem(
                    reason=f"the collection has {len(feats)} features", field=what,
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
    code: str = typer.Argument(..., help="Grid code (15 digits) to split."),
    line: Path = typer.Option(..., "--line", exists=True, dir_okay=False,
                              help="GeoJSON or WKT file: a line crossing the grid edge to edge."),
    effective_from: datetime | None = EFFECTIVE,
) -> None:
    """Split a grid along a line; the pieces get new DB11 codes, the old code is retired."""
    from geo.planning import split_grid

    geom = _read_geometry(line, "line")
    with connection() as conn:
        res = split_grid(conn, code, geom, effective_from=effective_from, settings=_settings())
    _done(res)


@grid_app.command("merge")
@domain_errors
def merge_cmd(
    codes: list[str] = typer.Argument(..., help="Two or more adjacent grids of one community."),
    effective_from: datetime | None = EFFECTIVE,
) -> None:
    """Merge adjacent grids into one new grid (new DB11 code; the old codes are retired)."""
    from geo.planning import merge_grids

    with connection() as conn:
        res = merge_grids(conn, codes, effective_from=effective_from, settings=_settings())
    _done(res)


@grid_app.command("reshape")
@domain_errors
def reshape_cmd(
    code: str = typer.Argument(..., help="Grid code whose boundary moves."),
    file: Path = typer.Argument(..., exists=True, dir_okay=False,
                                help="GeoJSON or WKT file: the grid's new polygon."),
    effective_from: datetime | None = EFFECTIVE,
) -> None:
    """Replace one grid's geometry (code kept). Neighbours that must give way: use ``import``."""
    from geo.planning import reshape_grids

    geom = _read_geometry(file, "geometry")
    with connection() as conn:
        res = reshape_grids(conn, {code: geom}, effective_from=effective_from,
                            settings=_settings())
    _done(res)


@grid_app.command("reassign")
@domain_errors
def reassign_cmd(
    building: str = typer.Argument(..., help="Building code."),
    grid: str = typer.Argument(..., help="Grid code of the same community."),
    effective_from: datetime | None = EFFECTIVE,
) -> None:
    """Reassign one building to another grid of its community."""
    from geo.planning import reassign_buildings

    with connection() as conn:
        res = reassign_buildings(conn, {building: grid}, effective_from=effective_from,
                                 settings=_settings())
    _done(res)


@grid_app.command("import")
@domain_errors
def import_cmd(
    file: Path = typer.Argument(..., exists=True, help="GeoPackage, Shapefile or GeoJSON."),
    community: str | None = typer.Option(None, "--community", help="Replace only this "
                                         "community's grids (default: the whole district)."),
    layer: str | None = typer.Option(None, "--layer", help="Layer to read (default 'grid', "
                                     "'grids', '网格' or the file's only layer)."),
    layer_map: list[str] | None = typer.Option(None, "--map", help=MAP_HELP),
    field_map: list[str] | None = typer.Option(None, "--field", help=FIELD_HELP),
    snap: float | None = typer.Option(
        None, "--snap", min=0, help="Snap grids to their community's boundary within this many "
        "metres (e.g. 0.5); what moved is printed."),
    effective_from: datetime | None = EFFECTIVE,
) -> None:
    """Import a redrawn grid layer as ONE change: unchanged grids are kept, changed ones get new
    versions, missing ones are retired, rows without a code get DB11 codes."""
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
    from_generation: int = typer.Argument(..., metavar="FROM", help="Earlier generation id."),
    to_generation: int = typer.Argument(..., metavar="TO", help="Later generation id."),
) -> None:
    """Grids added, removed and changed, codes created and retired, buildings moved."""
    from geo.planning import diff_generations

    with connection() as conn:
        print_json(diff_generations(conn, from_generation, to_generation))


@grid_app.command("undo")
@domain_errors
def undo_cmd(
    generation: int = typer.Argument(..., help="The latest planning change of its district."),
    effective_from: datetime | None = EFFECTIVE,
) -> None:
    """Undo a change: a new generation restoring the grids (with their previous codes) as they
    were before it; the codes it created stay retired."""
    from geo.planning.history import undo_generation

    with connection() as conn:
        res = undo_generation(conn, generation, effective_from=effective_from,
                              settings=_settings())
    _done(res)


@grid_app.command("cancel")
@domain_errors
def cancel_cmd(
    generation: int = typer.Argument(..., help="A scheduled change not yet in force."),
) -> None:
    """Cancel a scheduled change (removed whole; recorded in the audit log)."""
    from geo.planning import refresh_lookup
    from geo.planning.history import cancel_generation

    with connection() as conn:
        out = cancel_generation(conn, generation)
    refresh_lookup()
    print_json(out)


@grid_app.command("draft")
@domain_errors
def draft_cmd(
    community: str = typer.Argument(..., help="Community code (12 digits)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the draft's grids to this "
                                    "GeoJSON file (default: print the summary only)."),
) -> None:
    """Propose household-balanced grids following streets (street blocks: spanning-tree seed
    and boundary-flip local search); nothing is written. Accept it with ``wangge grid accept``."""
    from tqdm import tqdm

    from geo.planning import draft_partition

    with tqdm(desc="draft (tries)", unit="try") as bar, connection() as conn:

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
    community: str = typer.Argument(..., help="Community code the draft partitions."),
    file: Path = typer.Argument(..., exists=True, dir_okay=False,
                                help="The draft's GeoJSON (from ``wangge grid draft --out``)."),
    effective_from: datetime | None = EFFECTIVE,
) -> None:
    """Accept a draft as one change: its grids replace the community's, with new DB11 codes."""
    from geo.planning import accept_draft

    try:
        fc = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InvalidInput("the draft is not JSON", [Problem(reason=str(exc), field="FILE",
                                                             feature=str(file))]) from exc
    with connection() as conn:
        res = accept_draft(conn, community, fc, effective_from=effective_from,
                           settings=_settings())
    _done(res)


def register(app: typer.Typer) -> None:
    """Add ``wangge grid`` to the ``wangge`` app."""
    app.add_typer(grid_app, name="grid")
