"""HTTP routes that preview a planning change: the same code path as the real change, rolled
back (``geo.planning.preview``). Nothing is written by a preview.

Each route takes the body of its change route under ``/v1/planning`` and answers the would-be
grids (households, residents), the new 15-digit codes in DB11 order and every check's problem
as a GeoJSON point with its figure (WGS 84, lon/lat). A refused change previews with
``accepted: false`` (200); input the change cannot even start from answers 4xx as the change.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection

from api.dependencies import CONNECTION
from api.policy import PolicyRoute, require_area
from api.routers.planning import (
    AcceptIn,
    MergeIn,
    ReassignIn,
    ReshapeIn,
    Settings,
    SplitIn,
    planning_settings,
)
from api.schemas import FeatureCollection
from geo import planning
from geo.planning.preview import dry_run

router = APIRouter(prefix="/v1/planning/preview", tags=["planning"], route_class=PolicyRoute)


class PreviewGrid(BaseModel):
    code: str = Field(description="15-digit grid code (new codes allocated as if saved).")
    parent_code: str = Field(description="The community's 12-digit code.")
    name: str
    responsible_body: str
    households: int = Field(description="Households of the buildings it would hold.")
    residents: int = Field(description="Residents of the buildings it would hold.")
    buildings: int
    status: str = Field(description="created, changed (reshaped) or touched (its buildings "
                        "change).")
    team_from: str | None = Field(None, description="New grid: the closed grid whose team it "
                                  "carries by default.")
    team: dict[str, Any] | None = Field(None, description="New grid: the 2+5+N rule of the "
                                        "team it would get (leaders, cadres, officer_roles, "
                                        "workers, complete_2_5_n).")


class TeamMember(BaseModel):
    id: int = Field(description="grid_team_member id: what grids.{code}.team lists.")
    grid_code: str = Field(description="The closed grid whose team the member is on.")
    name: str
    role: str = Field(description="grid_leader, responsible_cadre, community_police, "
                      "urban_management, market_supervisor, judicial_mediator, "
                      "community_medic, grid_worker or volunteer.")


class PreviewProblem(BaseModel):
    check: str | None = Field(description="inside_community, overlap, gap, "
                              "building_in_one_grid or balance.")
    severity: str = Field(description="error (the change would be refused) or warning.")
    reason: str = Field(description="What is wrong, with the figure (中文/English as the check).")
    field: str | None = None
    feature: Any = Field(None, description="The grid or building code concerned.")
    m2: float | None = Field(None, description="Area of the gap, overlap or overhang, m².")
    households: int | None = Field(None, description="Households of the grid (balance).")
    by: int | None = Field(None, description="Households below or above the rule (balance).")
    other: str | None = Field(None, description="The overlapping sibling grid.")
    grids: list[str] | None = Field(None, description="Grids a building lies in.")


class PreviewOut(BaseModel):
    accepted: bool = Field(description="Whether saving this change now would be accepted.")
    operation: str
    codes: list[str] = Field(description="New grid codes in DB11 order (not reserved).")
    created: list[str]
    retired: list[str]
    changed: list[str]
    buildings_moved: int
    parent_team: list[TeamMember] = Field(description="The 2+5+N team members of the grids the "
                                          "change closes (offer them for grids.{code}.team).")
    grids: FeatureCollection[PreviewGrid] = Field(description="The would-be grids.")
    problems: FeatureCollection[PreviewProblem] = Field(
        description="Every problem of the checks, located (Point, WGS 84).")


@router.post("/split", operation_id="planning_preview_split", response_model=PreviewOut,
             summary="Preview a split (dry run: nothing written).")
def split(body: SplitIn, request: Request, conn: Connection = CONNECTION,
          settings: Settings = Depends(planning_settings)) -> dict[str, Any]:
    require_area(request, body.code)
    return dry_run(planning.split_grid, conn, body.code, body.line, grids=body.choices(),
                   effective_from=body.effective_from, settings=settings)


@router.post("/merge", operation_id="planning_preview_merge", response_model=PreviewOut,
             summary="Preview a merge (dry run: nothing written).")
def merge(body: MergeIn, request: Request, conn: Connection = CONNECTION,
          settings: Settings = Depends(planning_settings)) -> dict[str, Any]:
    for code in body.codes:
        require_area(request, code, field="codes")
    return dry_run(planning.merge_grids, conn, body.codes, effective_from=body.effective_from,
                   grids=body.choices(), settings=settings)


@router.post("/reshape", operation_id="planning_preview_reshape", response_model=PreviewOut,
             summary="Preview a reshape (dry run: nothing written).")
def reshape(body: ReshapeIn, request: Request, conn: Connection = CONNECTION,
            settings: Settings = Depends(planning_settings)) -> dict[str, Any]:
    for code in body.geometries:
        require_area(request, code, field="geometries")
    return dry_run(planning.reshape_grids, conn, body.geometries, grids=body.choices(),
                   effective_from=body.effective_from, settings=settings)


@router.post("/reassign", operation_id="planning_preview_reassign", response_model=PreviewOut,
             summary="Preview reassigning buildings (dry run: nothing written).")
def reassign(body: ReassignIn, request: Request, conn: Connection = CONNECTION,
             settings: Settings = Depends(planning_settings)) -> dict[str, Any]:
    for code in body.assignments.values():
        require_area(request, code, field="assignments")
    for building, grid in planning.building_grids(conn, list(body.assignments)).items():
        require_area(request, grid, field=f"grid of building {building}")
    return dry_run(planning.reassign_buildings, conn, body.assignments,
                   effective_from=body.effective_from, settings=settings)


@router.post("/draft/accept", operation_id="planning_preview_accept_draft",
             response_model=PreviewOut,
             summary="Preview accepting a draft partition (dry run: nothing written).")
def accept(body: AcceptIn, request: Request, conn: Connection = CONNECTION,
           settings: Settings = Depends(planning_settings)) -> dict[str, Any]:
    require_area(request, body.community, field="community")
    return dry_run(planning.accept_draft, conn, body.community, body.draft,
                   grids_chosen=body.choices(), effective_from=body.effective_from,
                   settings=settings)
