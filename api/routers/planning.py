"""HTTP routes for planning: split, merge, reshape, reassign, import, diff, draft, accept.

Geometry in and out is GeoJSON in WGS 84 (lon, lat). Every accepted change returns the new
generation; a refused one answers 422/409 with the problems (what, where, by how much). A
planner with an area may only touch grids and communities inside it (403 otherwise).
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection

from api.dependencies import get_connection
from api.policy import PolicyRoute, caller, require_area
from geo import planning
from geo.data.generations import list_generations

router = APIRouter(prefix="/v1/planning", tags=["planning"], route_class=PolicyRoute)


class ChangeOut(BaseModel):
    generation: int = Field(description="Id of the generation the change created.")
    operation: str = Field(description="split, merge, reshape, reassign or import.")
    created: list[str] = Field(description="Grid codes created (DB11 numbering).")
    retired: list[str] = Field(description="Grid codes retired (never reused).")
    changed: list[str] = Field(description="Grid codes whose geometry changed (code kept).")
    buildings_moved: int = Field(description="Buildings whose grid changed.")
    warnings: list[dict[str, Any]] = Field(description="Balance-rule warnings (warn mode).")
    grids: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per new grid: name and responsible body (derived "
        "from the grid it comes from), team_from (the grid whose 2+5+N team it carries) and "
        "the team rule (leaders, cadres, officer_roles, workers, complete_2_5_n).")


class ChangeIn(BaseModel):
    effective_from: datetime | None = Field(
        None, description="When the change takes effect (ISO 8601); default now.")


class SplitIn(ChangeIn):
    code: str = Field(description="Grid code (15 digits) to split.")
    line: dict[str, Any] = Field(description="GeoJSON LineString (WGS 84) crossing the grid.")


class MergeIn(ChangeIn):
    codes: list[str] = Field(description="Adjacent grid codes of one community.")


class ReshapeIn(ChangeIn):
    geometries: dict[str, dict[str, Any]] = Field(
        description="{grid code: GeoJSON Polygon/MultiPolygon (WGS 84)}.")


class ReassignIn(ChangeIn):
    assignments: dict[str, str] = Field(description="{building code: grid code}.")


class AcceptIn(ChangeIn):
    community: str = Field(description="Community code (12 digits) the draft partitions.")
    draft: dict[str, Any] = Field(description="The draft's GeoJSON FeatureCollection.")


def _settings(request: Request) -> planning.PlanningSettings:
    return getattr(request.app.state, "planning_settings", None) or planning.PlanningSettings()


def _author(request: Request) -> str | None:
    """Who makes the change, for the audit trail: the signed-in user or key (None when access
    is not enforced)."""
    who = caller(request)
    return None if who is None or who.kind == "anonymous" else f"{who.kind}:{who.name}"


def _out(res: planning.ChangeResult) -> ChangeOut:
    planning.refresh_lookup()
    return ChangeOut(**res.as_dict())


@router.post("/split", operation_id="planning_split", response_model=ChangeOut,
             summary="Split a grid along a line into new grids (one new generation).")
def split(body: SplitIn, request: Request,
          conn: Connection = Depends(get_connection)) -> ChangeOut:
    require_area(request, body.code)
    return _out(planning.split_grid(conn, body.code, body.line,
                                    effective_from=body.effective_from,
                                    settings=_settings(request), author=_author(request)))


@router.post("/merge", operation_id="planning_merge", response_model=ChangeOut,
             summary="Merge adjacent grids of one community into one new grid.")
def merge(body: MergeIn, request: Request,
          conn: Connection = Depends(get_connection)) -> ChangeOut:
    for code in body.codes:
        require_area(request, code, field="codes")
    return _out(planning.merge_grids(conn, body.codes, effective_from=body.effective_from,
                                     settings=_settings(request), author=_author(request)))


@router.post("/reshape", operation_id="planning_reshape", response_model=ChangeOut,
             summary="Move boundaries: replace grids' geometry (codes kept).")
def reshape(body: ReshapeIn, request: Request,
            conn: Connection = Depends(get_connection)) -> ChangeOut:
    for code in body.geometries:
        require_area(request, code, field="geometries")
    return _out(planning.reshape_grids(conn, body.geometries,
                                       effective_from=body.effective_from,
                                       settings=_settings(request), author=_author(request)))


@router.post("/reassign", operation_id="planning_reassign", response_model=ChangeOut,
             summary="Reassign buildings to other grids of their community.")
def reassign(body: ReassignIn, request: Request,
             conn: Connection = Depends(get_connection)) -> ChangeOut:
    for code in body.assignments.values():
        require_area(request, code, field="assignments")
    for building, grid in planning.building_grids(conn, list(body.assignments)).items():
        require_area(request, grid, field=f"grid of building {building}")
    return _out(planning.reassign_buildings(conn, body.assignments,
                                            effective_from=body.effective_from,
                                            settings=_settings(request), author=_author(request)))


@router.post("/import", operation_id="planning_import", response_model=ChangeOut,
             summary="Import a redrawn grid layer (GPKG, GeoJSON, zipped Shapefile) as one change.")
def import_layer(request: Request, file: UploadFile = File(..., description="The grid layer."),
                 community: str | None = Form(None, description="Limit to this community "
                                              "(required for a planner with an area)."),
                 layer: str | None = Form(None, description="Layer to read (default 'grid')."),
                 effective_from: datetime | None = Form(None, description="ISO 8601."),
                 conn: Connection = Depends(get_connection)) -> ChangeOut:
    require_area(request, community, field="community")
    with tempfile.TemporaryDirectory() as tmp:
        name = Path(file.filename or "grid.gpkg").name
        path = Path(tmp) / name
        with path.open("wb") as fh:
            shutil.copyfileobj(file.file, fh)
        if name.lower().endswith(".zip"):
            import zipfile

            with zipfile.ZipFile(path) as z:
                z.extractall(Path(tmp) / "x")
            shp = sorted((Path(tmp) / "x").rglob("*.shp"))
            path = shp[0] if shp else path
        res = planning.import_grid_layer(conn, path, community=community, layer=layer,
                                         effective_from=effective_from,
                                         settings=_settings(request),
                                         author=_author(request))
    return _out(res)


class GenerationOut(BaseModel):
    id: int = Field(description="Generation id (ids follow commit order).")
    kind: str = Field(description="import, demo, planning:split, planning:merge, ...")
    effective_from: datetime = Field(description="When it takes (or took) effect.")
    created_at: datetime = Field(description="When it was written.")
    author: str | None = Field(description="Who made it (user:NAME or api_key:NAME).")
    note: str | None = Field(description="Free text note.")
    scheduled: bool = Field(description="True while effective_from is in the future.")
    in_force: bool = Field(description="True for the generation in force now.")
    operation: str | None = Field(description="The planning operation, if any.")
    summary: dict[str, Any] | None = Field(
        description="The planning change's summary (created, retired, changed, moved).")


@router.get("/generations", operation_id="planning_generations",
            response_model=list[GenerationOut],
            summary="Boundary generations, newest first (accepted changes only).")
def generations(conn: Connection = Depends(get_connection),
                limit: int = Query(200, ge=1, le=1000, description="At most this many."),
                ) -> list[GenerationOut]:
    return [GenerationOut(**g) for g in list_generations(conn, limit=limit)]


@router.get("/diff", operation_id="planning_diff",
            summary="What changed between two generations: grids, buildings moved, codes.")
def diff(conn: Connection = Depends(get_connection),
         from_generation: int = Query(..., alias="from", description="Earlier generation id."),
         to_generation: int = Query(..., alias="to", description="Later generation id."),
         ) -> dict[str, Any]:
    """Shape: {from_generation, to_generation, grids_added, grids_removed, grids_changed,
    codes_created, codes_retired, buildings_moved: [{building, from, to, by}]}."""
    return planning.diff_generations(conn, from_generation, to_generation)


@router.get("/draft/{community}", operation_id="planning_draft",
            summary="Propose household-balanced grids following streets (spopt max-p).")
def draft(community: str, request: Request,
          conn: Connection = Depends(get_connection)) -> dict[str, Any]:
    """Shape: a GeoJSON FeatureCollection (WGS 84) of proposed grids (properties: parent_code,
    name, responsible_body, households) plus ``ratio`` (largest/smallest households),
    ``blocks`` (street blocks) and ``units`` (blocks cut between buildings)."""
    require_area(request, community, field="community")
    d = planning.draft_partition(conn, community, settings=_settings(request))
    return {**d.as_geojson(), "ratio": d.ratio, "blocks": d.blocks, "units": d.units}


@router.post("/draft/accept", operation_id="planning_accept_draft", response_model=ChangeOut,
             summary="Accept a draft partition as one change of its community.")
def accept(body: AcceptIn, request: Request,
           conn: Connection = Depends(get_connection)) -> ChangeOut:
    require_area(request, body.community, field="community")
    return _out(planning.accept_draft(conn, body.community, body.draft,
                                      effective_from=body.effective_from,
                                      settings=_settings(request), author=_author(request)))
