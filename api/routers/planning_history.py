"""HTTP routes for the history of grid boundaries: undo a change, cancel a scheduled one, and
the diff between two generations as map features (WGS 84 GeoJSON).

The list of generations and the diff as lists are in ``api.routers.planning``. Undo writes a new
generation through the same checks and audit trail as any change; cancelling is audited in
``audit_log``. A planner with an area may only undo or cancel changes inside it (403).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection

from api.dependencies import CONNECTION
from api.policy import PolicyRoute, require_area
from api.routers.planning import ChangeOut, Settings, _author, _out, planning_settings
from api.routers.planning_preview import PreviewOut
from api.schemas import FeatureCollection
from geo import planning
from geo.planning import history
from geo.planning.preview import dry_run

router = APIRouter(prefix="/v1/planning", tags=["planning"], route_class=PolicyRoute)


class UndoIn(BaseModel):
    generation: int = Field(ge=1, le=2_147_483_647, description="The generation to undo: the "
                            "latest planning change of its district(s).")
    effective_from: datetime | None = Field(
        None, description="When the undo takes effect (ISO 8601); default now. A scheduled "
        "generation is undone only on or after its own date (or cancel it instead).")


class CancelOut(BaseModel):
    generation: int = Field(description="The cancelled generation (it no longer exists).")
    kind: str = Field(description="Its kind, e.g. planning:split.")
    effective_from: str = Field(description="When it would have taken effect (ISO 8601).")
    operation: str | None = Field(description="The planning operation.")
    grids_removed: list[str] = Field(description="Grid codes it would have created.")
    grids_restored: list[str] = Field(description="Grid codes whose versions are open again.")
    buildings_restored: int = Field(description="Buildings given back their previous grid.")
    analysis_runs_repointed: list[int] = Field(
        description="Analysis runs that named it, now naming the generation in force.")


class DiffFeatureProperties(BaseModel):
    change: str = Field(description="added, removed, changed (the later version), "
                        "changed_before (the earlier version) or moved (a building).")
    code: str = Field(description="Grid code, or building code for a moved building.")
    name: str | None = Field(None, description="Grid or building name.")
    generation: int | None = Field(None, description="The generation whose version is shown "
                                   "(grids).")
    from_: str | None = Field(None, alias="from", description="Moved building: grid before.")
    to: str | None = Field(None, description="Moved building: grid after.")
    by: str | None = Field(None, description="Moved building: location (a boundary moved) or "
                           "assignment (reassigned).")


def _scope(request: Request, conn: Connection, generation: int) -> None:
    """403 unless the caller's area covers every grid the generation touched."""
    for code in history.touched_codes(conn, generation):
        require_area(request, code, field="generation")


@router.post("/undo", operation_id="planning_undo", response_model=ChangeOut,
             summary="Undo the latest change of a district: a new generation restoring the "
             "grids (with their previous codes) as they were before it.")
def undo(body: UndoIn, request: Request, conn: Connection = CONNECTION,
         settings: Settings = Depends(planning_settings)) -> ChangeOut:
    _scope(request, conn, body.generation)
    return _out(history.undo_generation(conn, body.generation,
                                        effective_from=body.effective_from, settings=settings,
                                        author=_author(request)))


@router.post("/preview/undo", operation_id="planning_preview_undo", response_model=PreviewOut,
             summary="Preview an undo (dry run: nothing written): the grids it would restore, "
             "the codes it would retire, the checks.")
def preview_undo(body: UndoIn, request: Request, conn: Connection = CONNECTION,
                 settings: Settings = Depends(planning_settings)) -> dict[str, Any]:
    _scope(request, conn, body.generation)
    return dry_run(history.undo_generation, conn, body.generation,
                   effective_from=body.effective_from, settings=settings)


@router.delete("/generations/{generation}", operation_id="planning_cancel_generation",
               response_model=CancelOut,
               summary="Cancel a scheduled change that is not yet in force (audited).")
def cancel(request: Request, conn: Connection = CONNECTION,
           generation: int = Path(ge=1, le=2_147_483_647,
                                  description="The scheduled generation."),
           ) -> dict[str, Any]:
    _scope(request, conn, generation)
    out = history.cancel_generation(conn, generation, author=_author(request))
    planning.refresh_lookup()
    return out


@router.get("/diff/features", operation_id="planning_diff_features",
            response_model=FeatureCollection[DiffFeatureProperties], response_model_by_alias=True,
            response_model_exclude_none=True,
            summary="The diff of two generations as GeoJSON (WGS 84): grids added, removed, "
            "changed (before and after), buildings moved (points).")
def diff_features(conn: Connection = CONNECTION,
                  from_generation: int = Query(..., alias="from", ge=1, le=2_147_483_647,
                                               description="Earlier generation id."),
                  to_generation: int = Query(..., alias="to", ge=1, le=2_147_483_647,
                                             description="Later generation id."),
                  ) -> dict[str, Any]:
    return planning.diff_features(conn, from_generation, to_generation)
