"""Response shapes of the incident routes (``api/routers/incidents.py``), so that ``/docs``
shows what each answer holds. Times are ISO 8601 with offset; coordinates lon, lat (WGS 84)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from api.schemas import FeatureCollection


class Incident(BaseModel):
    """A case's public fields (no personal data of the reporter)."""

    id: int
    category_code: str
    category_name_zh: str | None
    category_name_en: str | None
    description: str | None
    address: str | None
    lon: float = Field(description="Longitude, WGS 84.")
    lat: float = Field(description="Latitude, WGS 84.")
    district_code: str | None
    street_code: str | None
    community_code: str | None
    grid_code: str | None
    boundary_distance_m: float | None = Field(description="Distance to the grid boundary (m).")
    near_boundary: bool | None
    status: str = Field(description="Step of the six-step loop, or 'duplicate'.")
    duplicate_of: int | None
    department_ids: list[int] | None
    departments: list[str] | None = Field(description="Codes of the routed departments.")
    escalation_level: str | None = Field(description="grid, street or district.")
    source: str | None = Field(description="api, open311, ...")
    rating: int | None = Field(description="Resident's rating 1-5.")
    reopen_count: int | None
    urge_count: int | None
    reported_at: datetime
    updated_at: datetime | None
    checkin_due: datetime | None
    amber_at: datetime | None = Field(description="80 % of the resolution time.")
    resolve_due: datetime | None
    checked_in_at: datetime | None
    consulting_at: datetime | None
    in_progress_at: datetime | None
    feedback_at: datetime | None
    rated_at: datetime | None
    closed_at: datetime | None
    sla: str = Field(description="green, amber, red, or none for a closed case.")


class HistoryEntry(BaseModel):
    id: int
    action: str
    from_status: str | None
    to_status: str | None
    actor: str | None
    note: str | None
    detail: dict[str, Any] | None
    at: datetime


class PhotoInfo(BaseModel):
    id: int
    history_id: int | None = Field(description="The history step the photo belongs to.")
    content_type: str
    size_bytes: int
    created_at: datetime | None


class IncidentDetail(Incident):
    """A case with its history (append-only) and its photos."""

    history: list[HistoryEntry] = []
    photos: list[PhotoInfo] = []


class OverdueIncident(BaseModel):
    id: int
    category_code: str
    status: str
    street_code: str | None
    grid_code: str | None
    department_ids: list[int] | None
    reported_at: datetime
    resolve_due: datetime | None
    amber_at: datetime | None
    escalation_level: str | None
    urge_count: int | None
    lon: float
    lat: float
    sla: str = Field(description="red (past the deadline) or amber (past 80 % of it).")


class StepStats(BaseModel):
    """Counts, median hours per step and satisfaction of one grid/community/street/department."""

    code: str | None = Field(description="Area or department code.")
    name: str | None = Field(None, description="Area or department name.")
    incidents: int
    open: int
    closed: int
    duplicates: int
    overdue: int
    median_checkin_h: float | None
    median_consult_h: float | None
    median_carry_out_h: float | None
    median_feedback_h: float | None
    median_rating_h: float | None
    median_total_h: float | None
    satisfaction_mean: float | None = Field(description="Mean rating 1-5.")
    satisfied_share: float | None = Field(description="Share of ratings of 4 or 5.")


class StatsCollection(FeatureCollection[StepStats]):
    """``StepStats`` per area as features of the current area geometry (null for departments)."""


class Rollup(BaseModel):
    """``StepStats`` rolled up per city and per district."""

    city: list[StepStats] = Field(description="One entry per city.")
    district: list[StepStats] = Field(description="One entry per district.")


class SuperviseOut(BaseModel):
    """One case supervised by the city (市委督单), as written to its history."""

    history_id: int
    incident_id: int
    action: str = Field(description="Always supervise.")
    level: str = Field(description="Who supervises: city.")
    district: str | None = Field(description="The case's district code.")
    overdue: bool = Field(description="Whether the case was past its resolution deadline.")


class TransitionOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    history_id: int
    incident_id: int
    action: str
    from_: str = Field(alias="from", description="Status before.")
    to: str = Field(description="Status after.")
    at: datetime


class RerouteOut(BaseModel):
    history_id: int
    incident_id: int
    departments: list[int] = Field(description="Ids of the departments now responsible.")


class UrgeOut(BaseModel):
    history_id: int
    incident_id: int
    action: str


class EscalationOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    incident_id: int
    from_: str = Field(alias="from", description="Escalation level before.")
    to: str = Field(description="Escalation level after: street or district.")
    checkin_due: datetime = Field(description="The restarted check-in deadline.")


class PhotoOut(BaseModel):
    id: int
    incident_id: int
    history_id: int | None
    size_bytes: int


class Category(BaseModel):
    code: str = Field(description="Also the Open311 service_code.")
    name_zh: str
    name_en: str | None
    description: str | None
    checkin_workdays: float
    resolve_workdays: float
    active: bool
    departments: list[str] = Field(description="Codes of the departments it routes to.")


class Department(BaseModel):
    id: int
    code: str
    name: str
    name_en: str | None
    level: str | None
    area_code: str | None
