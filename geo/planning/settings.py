"""Settings of grid redrawing: the balance rule, tolerances, numbering and drafts."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from geo.core.settings import DataSettings, WanggeSettings


class PlanningSettings(WanggeSettings):
    """Rules applied to every grid redraw."""

    households_min: int = Field(default=DataSettings().households_min,
                                description="Balance rule: fewest households a grid.")
    households_max: int = Field(default=DataSettings().households_max,
                                description="Balance rule: most households a grid.")
    balance_mode: Literal["warn", "error"] = Field(
        default="error", description="A grid outside the balance rule: 'error' refuses the "
        "change, 'warn' accepts it and lists a warning.")
    gap_tolerance_m2: float = Field(default=1.0, description="Largest uncovered area (m²) "
                                    "a community's grids may leave.")
    overlap_tolerance_m2: float = Field(default=1.0, description="Largest overlap (m²) "
                                        "between two sibling grids.")
    containment_tolerance_m2: float = Field(default=1.0, description="Largest area (m²) of a "
                                            "grid outside its community.")
    numbering_row_m: float = Field(default=150.0, description="DB11 numbering: height (m) of "
                                   "the north→south rows new codes are numbered in.")
    draft_ratio: float = Field(default=1.5, description="Draft partition: stop searching once "
                               "every grid keeps the balance rule and the largest is at most "
                               "this × the smallest, by households.")
    draft_unit_households: int = Field(default=30, description="Draft partition: street "
                                       "blocks holding more households are cut between "
                                       "buildings into strips of about this many.")
