"""Point-in-grid lookup: which district, street, community and grid hold a point.

PostGIS stays the source of truth; answers come from an in-process index built from one
generation's areas and cached per database and generation. The rooms:

- ``settings``: ``LookupSettings``;
- ``lattice``: the lattice of cells and the exact boundary-cell tests;
- ``index``: ``LookupIndex`` (lattice + STRtree of one district) and the status codes;
- ``city``: ``CityIndex``, one index over several districts (a lattice per district);
- ``cache``: building indexes from PostGIS, caching and refreshing them (``get_index``);
- ``service``: the public functions (``locate_point``, ``locate_batch``);
- ``files``: points from CSV/JSON/GeoJSON bodies and files, the JSON answers of a batch.
"""

from geo.lookup.cache import build_index, get_index, invalidate_index, parse_date
from geo.lookup.city import CityIndex
from geo.lookup.files import (
    batch_entries,
    coordinate_columns,
    parse_batch,
    read_points,
    write_points,
)
from geo.lookup.index import (
    INVALID,
    NO_GRID,
    OK,
    OUT_OF_RANGE,
    OUTSIDE,
    STATUS_NAMES,
    SWAPPED,
    LookupIndex,
)
from geo.lookup.service import (
    LookupResult,
    locate_batch,
    locate_point,
    lookup_coordinates,
    parse_coordinate,
    resolve_point,
    status_error,
    to_wgs84_checked,
)
from geo.lookup.settings import LookupSettings

__all__ = [
    "CityIndex",
    "INVALID",
    "NO_GRID",
    "OK",
    "OUTSIDE",
    "OUT_OF_RANGE",
    "STATUS_NAMES",
    "SWAPPED",
    "LookupIndex",
    "LookupResult",
    "LookupSettings",
    "batch_entries",
    "build_index",
    "coordinate_columns",
    "get_index",
    "invalidate_index",
    "locate_batch",
    "locate_point",
    "lookup_coordinates",
    "parse_batch",
    "parse_coordinate",
    "parse_date",
    "read_points",
    "resolve_point",
    "status_error",
    "to_wgs84_checked",
    "write_points",
]
