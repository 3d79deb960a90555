"""Settings of incident intake, duplicates, the SLA calendar and photos."""

from __future__ import annotations

from datetime import date

from pydantic import Field

from geo.core.settings import WanggeSettings


class IncidentSettings(WanggeSettings):
    """Incident intake, duplicates, SLA calendar, photos."""

    duplicate_radius_m: float = Field(
        default=50.0, description="A report this close (metres) to an open case of the same "
        "category is linked to it as a duplicate."
    )
    duplicate_window_hours: float = Field(
        default=72.0, description="Only open cases reported within this many hours count as "
        "duplicates."
    )
    near_boundary_m: float = Field(
        default=5.0, description="Reports closer than this (metres) to a grid boundary are "
        "flagged for the grid worker to confirm."
    )
    holidays: list[date] = Field(
        default_factory=list, description="Non-working dates (ISO, JSON list): overrides the "
        "official calendar and the weekend rule."
    )
    workdays: list[date] = Field(
        default_factory=list, description="Working dates (ISO, JSON list), e.g. a make-up "
        "working weekend (调休) not yet in the official calendar: overrides it and the weekend "
        "rule (a date in both lists is a holiday)."
    )
    official_calendar: bool = Field(
        default=True, description="Count working days by the State Council's published "
        "schedule (holidays and 调休, package chinese-calendar); years it does not cover fall "
        "back to the weekend rule, with a warning."
    )
    workdays_off_weekend: bool = Field(
        default=True, description="Saturdays and Sundays are not working days (outside the "
        "official calendar's years, or with it off)."
    )
    timezone: str = Field(default="Asia/Shanghai", description="Time zone of the SLA calendar.")
    amber_fraction: float = Field(
        default=0.8, description="Share of the resolution time after which a case is amber."
    )
    poor_rating_max: int = Field(
        default=2, description="Ratings (1-5) at or below this are poor: the case may reopen."
    )
    photo_max_bytes: int = Field(
        default=5 * 1024 * 1024, description="Largest photo accepted (bytes); more is refused."
    )
    map_refresh_overlap_s: float = Field(
        default=30.0, ge=0, description="The command map's refresh asks for cases changed since "
        "this many seconds before its previous answer, not since the answer itself: a case "
        "stamped by a transaction that began before the answer and committed after it (or was "
        "replayed later on a standby, or stamped by a server whose clock lags) is not missed. "
        "The cases of the overlap come again; the map keeps the newest row of each."
    )
    lookup_staleness_ms: float = Field(
        default=500, description="A report is located with the in-process lookup index, "
        "checked against the database for a new generation at most this often (ms); a change "
        "made in the same process is seen at once."
    )
    report_writers: int = Field(
        default=2, ge=1, description="Writer threads filing reports in the HTTP service (each "
        "holds one pooled connection while it files a batch)."
    )
    report_batch_max: int = Field(
        default=32, ge=1, description="At most this many waiting reports are filed in one "
        "transaction."
    )
