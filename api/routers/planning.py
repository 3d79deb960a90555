"""HTTP routes for planning: split, merge, reshape, reassign, import, diff, draft, accept.

Geometry in and out is GeoJSON in WGS 84 (lon, lat). Every accepted change returns the new
generation; a refused one answers 422/409 with the problems (what, where, by how much). A
planner with an area may only touch grids and communities inside it (403 otherwise).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from pydantic import BaseModel, Field, StringConstraints
from sqlalchemy.engine import Connection

from api.dependencies import get_connection
from api.geojson import FeatureCollection, Geometry
from api.limits import MAX_LIST_ITEMS
from api.policy import PolicyRoute, require_area
from api.uploads import saved_upload
from geo import planning

AreaCode = Annotated[str, StringConstraints(max_length=64)]
router = APIRouter(prefix="/v1/planning", tags=["planning"], route_class=PolicyRoute)


class ChangeOut(BaseModel):
    generation: int = Field(description="Id of the generation the change created.")
    operation: str = Field(description="split, merge, reshape, reassign or import.")
    created: list[str] = Field(description="Grid codes created (DB11 numbering).")
    retired: list[str] = Field(description="Grid codes retired (never reused).")
    changed: list[str] = Field(description="Grid codes whose geometry changed (code kept).")
    buildings_moved: int = Field(description="Buildings whose grid changed.")
    warnings: list[dict[str, Any]] = Field(description="Balance-rule warnings (warn mode).")


class ChangeIn(BaseModel):
    effective_from: datetime | None = Field(
        None, description="When the change takes effect (ISO 8601); default now.")


class SplitIn(ChangeIn):
    code: str = Field(description="Grid code (15 digits) to split.", max_length=15)
    line: Geometry = Field(description="GeoJSON LineString (WGS 84) crossing the grid.")


class MergeIn(ChangeIn):
    codes: list[AreaCode] = Field(description="Adjacent grid codes of one community.",
                                  max_length=MAX_LIST_ITEMS)


class ReshapeIn(ChangeIn):
    geometries: dict[str, Geometry] = Field(
        description="{grid code: GeoJSON Polygon/MultiPolygon (WGS 84)}.", max_length=1000)


class ReassignIn(ChangeIn):
    assignments: dict[str, AreaCode] = Field(description="{building code: grid code}.",
                                             max_length=100_000)


class AcceptIn(ChangeIn):
    community: str = Field(description="Community code (12 digits) the draft partitions.",
                           max_length=15)
    draft: FeatureCollection = Field(description="The draft's GeoJSON FeatureCollection.")


def _settings(request: Request) -> planning.PlanningSettings:
    return getattr(request.app.state, "planning_settings", None) or planning.PlanningSettings()


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
                                    settings=_settings(request)))


@router.post("/merge", operation_id="planning_merge", response_model=ChangeOut,
             summary="Merge adjacent grids of one community into one new grid.")
def merge(body: MergeIn, request: Request,
          conn: Connection = Depends(get_connection)) -> ChangeOut:
    for code in body.codes:
        require_area(request, code, field="codes")
    return _out(planning.merge_grids(conn, body.codes, effective_from=body.effective_from,
                                     settings=_settings(request)))


@router.post("/reshape", operation_id="planning_reshape", response_model=ChangeOut,
             summary="Move boundaries: replace grids' geometry (codes kept).")
def reshape(body: ReshapeIn, request: Request,
            conn: Connection = Depends(get_connection)) -> ChangeOut:
    for code in body.geometries:
        require_area(request, code, field="geometries")
    return _out(planning.reshape_grids(conn, body.geometries,
                                       effective_from=body.effective_from,
                                       settings=_settings(request)))


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
                                            settings=_settings(request)))


@router.post("/import", operation_id="planning_import", response_model=ChangeOut,
             summary="Import a redrawn grid layer (GPKG, GeoJSON, zipped Shapefile) as one change.")
def import_layer(request: Request, file: UploadFile = File(..., description="The grid layer."),
                 community: str | None = Form(None, description="Limit to this community "
                                              "(required for a planner with an area).",
                                              max_length=15),
                 layer: str | None = Form(None, description="Layer to read (default 'grid').",
                                          max_length=64),
                 effective_from: datetime | None = Form(None, description="ISO 8601."),
                 conn: Connection = Depends(get_connection)) -> ChangeOut:
    require_area(request, community, field="community")
    with saved_upload(file, find=(".shp",)) as path:
        res = planning.import_grid_layer(conn, path, community=community, layer=layer,
                                         effective_from=effective_from,
                                         settings=_settings(request))
    return _out(res)


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
                                      settings=_settings(request)))
