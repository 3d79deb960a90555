"""Settings of grid redrawing: the balance rule, tolerances, numbering and drafts."""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import Field

from geo.core.settings import DataSettings, WanggeSettings


def _shared(name: str) -> Any:
    """A copy of the DataSettings field ``name`` (its default, description and checks)."""
    return copy.copy(DataSettings.model_fields[name])


class PlanningSettings(WanggeSettings):
    """Rules applied to every grid redraw."""

    # The balance rule and the tolerances are DataSettings' fields (one definition, the same
    # WANGGE_* variables); read when PlanningSettings is built, never at import time.
    households_min: int = _shared("households_min")
    households_max: int = _shared("households_max")
    balance_mode: Literal["warn", "error"] = Field(
        default="error", description="A grid outside the balance rule: 'error' refuses the "
        "change, 'warn' accepts it and lists a warning.")
    gap_tolerance_m2: float = _shared("gap_tolerance_m2")
    overlap_tolerance_m2: float = _shared("overlap_tolerance_m2")
    containment_tolerance_m2: float = _shared("containment_tolerance_m2")
    sliver_width_m: float = _shared("sliver_width_m")
    numbering_row_m: float = Field(default=150.0, description="DB11 numbering: height (m) of "
                                   "the north→south rows new codes are numbered in.")
    draft_ratio: float = Field(default=1.2, description="Draft partition: stop searching once "
                               "every grid keeps the balance rule and the largest is at most "
                               "this × the smallest, by households.")
    draft_method: Literal["flips", "recom"] = Field(
        default="flips", description="Draft partition: the refinement after the spanning-tree "
        "seed: 'flips' (boundary-unit local search) or 'recom' (GerryChain's ReCom).")
    draft_unit_households: int = Field(default=30, description="Draft partition: street "
                                       "blocks holding more households are cut between "
                                       "buildings into strips of about this many.")
