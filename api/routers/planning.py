"""HTTP routes for planning: split, merge, reshape, reassign, import, diff, draft, accept.

Geometry in and out is GeoJSON in WGS 84 (lon, lat). Every accepted change returns the new
generation; a refused one answers 422/409 with the problems (what, where, by how much). A
planner with an area may only touch grids and communities inside it (403 otherwise).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy.engine import Connection

from api.dependencies import CONNECTION, AppSettings
from api.geojson import FeatureCollection as FeatureCollectionIn
from api.geojson import Geometry
from api.limits import MAX_LIST_ITEMS
from api.policy import PolicyRoute, caller, require_area
from api.schemas import FeatureCollection
from api.uploads import saved_upload
from geo import planning
from geo.data.generations import list_generations
from geo.data.names import MAX_PAIR_CHARS, MAX_PAIRS, parse_pairs
from geo.planning.choices import NAME_MAX, TEAM_MAX

AreaCode = Annotated[str, StringConstraints(max_length=64)]
Pair = Annotated[str, StringConstraints(max_length=MAX_PAIR_CHARS)]  # OURS=THEIRS
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
        default_factory=dict, description="Per new grid: name and responsible body (chosen in "
        "the body's grids, else derived from the grid it comes from), team_from (the grid "
        "whose 2+5+N team it carries by default) and the team rule of its team as written "
        "(leaders, cadres, officer_roles, workers, complete_2_5_n).")
    source: dict[str, Any] = Field(
        default_factory=dict, description="An import: how the file was read: renamed (the "
        "layer and fields read under another name: {layer, from} or {layer, field, as}) and "
        "snapped (grids moved onto their community's boundary: {code, parent, moved_m}).")


MAX_SNAP_M = 50.0  # a snap distance larger than this is a mistake, not a sliver


class NewGridIn(BaseModel):
    """What the caller chooses for one grid the change creates (all optional)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=NAME_MAX, description="The grid's name (no "
                             "control characters; unique within the community, else 409). "
                             "Default: derived from the grid it comes from (名称之1, 之2 ...).")
    responsible_body: str | None = Field(None, max_length=NAME_MAX, description="Default: the "
                                         "responsible body of the grid it comes from.")
    team: list[int] | None = Field(None, max_length=TEAM_MAX, description=(
        "grid_team_member ids of the closed grid(s)' 2+5+N team that go to this grid (the "
        "preview lists them as parent_team). A member named for some new grids goes only to "
        "those; members named nowhere stay with the default: every new grid gets a copy of "
        "the team of the closed grid it overlaps most. An id not on that team → 422."))


GridChoices = Annotated[dict[AreaCode, NewGridIn] | None, Field(
    None, max_length=1000, description="Per new grid code (the codes the preview showed: DB11 "
    "numbering is deterministic for the same state): name, responsible body, team. A code "
    "the change does not create → 409 预览已过期 (stale preview), nothing written.")]


class ChangeIn(BaseModel):
    effective_from: datetime | None = Field(
        None, description="When the change takes effect (ISO 8601); default now.")

    def choices(self) -> dict[str, dict[str, Any]] | None:
        """The ``grids`` field as plain dicts (only what was given), or None."""
        chosen = getattr(self, "grids", None)
        if not chosen:
            return None
        return {k: v.model_dump(exclude_none=True) for k, v in chosen.items()}


class SplitIn(ChangeIn):
    code: str = Field(description="Grid code (15 digits) to split.", max_length=15)
    line: Geometry = Field(description="GeoJSON LineString (WGS 84) crossing the grid.")
    grids: GridChoices = None


class MergeIn(ChangeIn):
    codes: list[AreaCode] = Field(description="Adjacent grid codes of one community.",
                                  max_length=MAX_LIST_ITEMS)
    grids: GridChoices = None


class ReshapeIn(ChangeIn):
    geometries: dict[str, Geometry] = Field(
        description="{grid code: GeoJSON Polygon/MultiPolygon (WGS 84)}.", max_length=1000)
    grids: GridChoices = None


class ReassignIn(ChangeIn):
    assignments: dict[str, AreaCode] = Field(description="{building code: grid code}.",
                                             max_length=100_000)


class AcceptIn(ChangeIn):
    community: str = Field(description="Community code (12 digits) the draft partitions.",
                           max_length=15)
    draft: FeatureCollectionIn = Field(description="The draft's GeoJSON FeatureCollection.")
    grids: GridChoices = None


class BuildingMove(BaseModel):
    building: str = Field(description="Building code.")
    from_: str | None = Field(alias="from", description="Grid code before.")
    to: str | None = Field(description="Grid code after.")
    by: str = Field(description="location (a boundary moved) or assignment (reassigned).")


class DiffOut(BaseModel):
    from_generation: int
    to_generation: int
    grids_added: list[str]
    grids_removed: list[str]
    grids_changed: list[str]
    codes_created: list[str]
    codes_retired: list[str]
    buildings_moved: list[BuildingMove]


class DraftGridProperties(BaseModel):
    code: str | None = Field(None, description="None: numbered (DB11) when accepted.")
    parent_code: str = Field(description="The community's code.")
    name: str
    responsible_body: str
    households: int


class DraftOut(FeatureCollection[DraftGridProperties]):
    """Proposed grids (WGS 84) and how balanced they are."""

    ratio: float = Field(description="Largest over smallest households of a proposed grid.")
    blocks: int = Field(description="Street blocks of the community.")
    units: int = Field(description="Blocks cut between buildings (the draft's building blocks).")
    method: str = Field(description="The refinement used: 'flips' (local search) or 'recom'.")
    largest_unit: int = Field(description="Households of the largest indivisible unit.")
    ratio_bound: float = Field(description="No partition into the grid counts tried can have a "
                               "lower largest/smallest (from the largest unit).")


planning_settings = AppSettings(planning.PlanningSettings, "planning_settings")
Settings = planning.PlanningSettings


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
          conn: Connection = CONNECTION,
          settings: Settings = Depends(planning_settings)) -> ChangeOut:
    require_area(request, body.code)
    return _out(planning.split_grid(conn, body.code, body.line,
                                    effective_from=body.effective_from, grids=body.choices(),
                                    settings=settings, author=_author(request)))


@router.post("/merge", operation_id="planning_merge", response_model=ChangeOut,
             summary="Merge adjacent grids of one community into one new grid.")
def merge(body: MergeIn, request: Request,
          conn: Connection = CONNECTION,
          settings: Settings = Depends(planning_settings)) -> ChangeOut:
    for code in body.codes:
        require_area(request, code, field="codes")
    return _out(planning.merge_grids(conn, body.codes, effective_from=body.effective_from,
                                     grids=body.choices(), settings=settings,
                                     author=_author(request)))


@router.post("/reshape", operation_id="planning_reshape", response_model=ChangeOut,
             summary="Move boundaries: replace grids' geometry (codes kept).")
def reshape(body: ReshapeIn, request: Request,
            conn: Connection = CONNECTION,
            settings: Settings = Depends(planning_settings)) -> ChangeOut:
    for code in body.geometries:
        require_area(request, code, field="geometries")
    return _out(planning.reshape_grids(conn, body.geometries, grids=body.choices(),
                                       effective_from=body.effective_from,
                                       settings=settings, author=_author(request)))


@router.post("/reassign", operation_id="planning_reassign", response_model=ChangeOut,
             summary="Reassign buildings to other grids of their community.")
def reassign(body: ReassignIn, request: Request,
             conn: Connection = CONNECTION,
             settings: Settings = Depends(planning_settings)) -> ChangeOut:
    for code in body.assignments.values():
        require_area(request, code, field="assignments")
    for building, grid in planning.building_grids(conn, list(body.assignments)).items():
        require_area(request, grid, field=f"grid of building {building}")
    return _out(planning.reassign_buildings(conn, body.assignments,
                                            effective_from=body.effective_from,
                                            settings=settings, author=_author(request)))


@router.post("/import", operation_id="planning_import", response_model=ChangeOut,
             summary="Import a redrawn grid layer (GPKG, GeoJSON, zipped Shapefile) as one change.")
def import_layer(request: Request, file: UploadFile = File(..., description="The grid layer."),
                 community: str | None = Form(None, description="Limit to this community "
                                              "(required for a planner with an area).",
                                              max_length=15),
                 layer: str | None = Form(None, description="Layer to read (default 'grid', "
                                          "'grids', '网格' or the file's only layer).",
                                          max_length=64),
                 layer_map: list[Pair] | None = Form(
                     None, alias="map", max_length=MAX_PAIRS, description="grid=THEIRS: the "
                     "file's name of the grid layer, e.g. grid=网格 (the same as layer)."),
                 field_map: list[Pair] | None = Form(
                     None, alias="field", max_length=MAX_PAIRS, description="OURS=THEIRS, "
                     "repeatable: the file's "
                     "name of a field, e.g. code=WGBH. Common names (WGBM, WGMC, SQBM, 网格编码"
                     " ...) are read without one; what was renamed is reported in source."),
                 snap: float | None = Form(
                     None, ge=0, le=MAX_SNAP_M, allow_inf_nan=False, description="Snap grids to "
                     "their community's boundary within this many metres (e.g. 0.5); what "
                     "moved is reported in source.snapped."),
                 effective_from: datetime | None = Form(None, description="ISO 8601."),
                 conn: Connection = CONNECTION,
                 settings: Settings = Depends(planning_settings)) -> ChangeOut:
    require_area(request, community, field="community")
    maps = {"layer_map": parse_pairs(layer_map, "map"),
            "field_map": parse_pairs(field_map, "field")}
    with saved_upload(file, find=(".shp",)) as path:
        res = planning.import_grid_layer(conn, path, community=community, layer=layer,
                                         snap_m=snap, effective_from=effective_from,
                                         settings=settings, author=_author(request), **maps)
    return _out(res)


class GenerationOut(BaseModel):
    id: int = Field(description="Generation id (ids follow commit order).")
    kind: str = Field(description="import, demo, planning:split, planning:merge, ...")
    effective_from: datetime = Field(description="When it takes (or took) effect.")
    created_at: datetime = Field(description="When it was written.")
    author: str | None = Field(description="Who made it (user:NAME or api_key:NAME).")
    note: str | None = Field(description="Free text note.")
    districts: list[str] | None = Field(
        None, description="The 6-digit district codes it changed (null: not recorded).")
    scheduled: bool = Field(description="True while effective_from is in the future.")
    in_force: bool = Field(description="True for the generation in force now.")
    districts: list[str] | None = Field(
        None, description="The 6-digit district codes it changed (None: unknown).")
    operation: str | None = Field(description="The planning operation, if any.")
    summary: dict[str, Any] | None = Field(
        description="The planning change's summary (created, retired, changed, moved).")


@router.get("/generations", operation_id="planning_generations",
            response_model=list[GenerationOut],
            summary="Boundary generations, newest first (accepted changes only).")
def generations(conn: Connection = CONNECTION,
                limit: int = Query(200, ge=1, le=1000, description="At most this many."),
                ) -> list[GenerationOut]:
    return [GenerationOut(**g) for g in list_generations(conn, limit=limit)]


@router.get("/diff", operation_id="planning_diff", response_model=DiffOut,
            summary="What changed between two generations: grids, buildings moved, codes.")
def diff(conn: Connection = CONNECTION,
         from_generation: int = Query(..., alias="from", description="Earlier generation id."),
         to_generation: int = Query(..., alias="to", description="Later generation id."),
         ) -> dict[str, Any]:
    return planning.diff_generations(conn, from_generation, to_generation)


@router.get("/draft/{community}", operation_id="planning_draft", response_model=DraftOut,
            summary="Propose household-balanced grids following streets (local search).")
def draft(community: str, request: Request,
          conn: Connection = CONNECTION,
          settings: Settings = Depends(planning_settings)) -> dict[str, Any]:
    require_area(request, community, field="community")
    d = planning.draft_partition(conn, community, settings=settings)
    return {**d.as_geojson(), "ratio": d.ratio, "blocks": d.blocks, "units": d.units,
            "method": d.method, "largest_unit": d.largest_unit, "ratio_bound": d.ratio_bound}


@router.post("/draft/accept", operation_id="planning_accept_draft", response_model=ChangeOut,
             summary="Accept a draft partition as one change of its community.")
def accept(body: AcceptIn, request: Request,
           conn: Connection = CONNECTION,
           settings: Settings = Depends(planning_settings)) -> ChangeOut:
    require_area(request, body.community, field="community")
    return _out(planning.accept_draft(conn, body.community, body.draft,
                                      effective_from=body.effective_from,
                                      grids_chosen=body.choices(),
                                      settings=settings, author=_author(request)))
