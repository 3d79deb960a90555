"""Planning: grid boundary changes, checks, code numbering, drafts and diffs.

Every accepted change writes one new generation through one writer, checked in PostGIS on the
affected communities and rolled back whole when a check fails. Geometry is EPSG:4326; areas
are measured in m² in the district's metric CRS (UTM). The rooms:

- ``settings``: ``PlanningSettings`` (balance rule, tolerances, numbering, drafts);
- ``operations``: split, merge, reshape, reassign buildings, import a grid layer;
- ``changes``: ``apply_change``, the one writer (a change as a new generation);
- ``checks``: ``check_communities`` (containment, overlap, gaps, buildings, balance);
- ``numbering``: ``allocate_codes`` (DB11 codes);
- ``drafts``: ``draft_partition`` (street blocks, spanning-tree seed + refinement in ``flips``
  or ``recom``), ``accept_draft``; ``balance``: the units graph and the score;
- ``diff``: ``diff_generations``, ``diff_features`` (the diff for a map), ``refresh_lookup``;
- ``history``: ``undo_generation``, ``cancel_generation`` (scheduled, not yet in force);
- ``geometry``: input geometries as MultiPolygons, the metric SRID.
"""

from geo.planning.changes import ChangeResult, apply_change, building_grids
from geo.planning.checks import check_communities
from geo.planning.diff import diff_features, diff_generations, refresh_lookup
from geo.planning.drafts import (
    Draft,
    accept_draft,
    draft_partition,
    draft_units,
    street_blocks,
)
from geo.planning.numbering import allocate_codes
from geo.planning.operations import (
    import_grid_layer,
    merge_grids,
    read_grid_layer,
    reassign_buildings,
    reshape_grids,
    split_grid,
)
from geo.planning.settings import PlanningSettings

__all__ = [
    "ChangeResult",
    "Draft",
    "PlanningSettings",
    "accept_draft",
    "allocate_codes",
    "apply_change",
    "building_grids",
    "check_communities",
    "diff_features",
    "diff_generations",
    "draft_partition",
    "draft_units",
    "import_grid_layer",
    "merge_grids",
    "read_grid_layer",
    "reassign_buildings",
    "refresh_lookup",
    "reshape_grids",
    "split_grid",
    "street_blocks",
]
