"""DB11 grid numbering: new grid codes in a community.

New codes take the next unused 3-digit numbers (after the highest number ever used there,
retired codes included, so no code is ever reused), ordered by rows north→south (row =
floor(distance of the centroid below the community's north edge / ``numbering_row_m``)), and
west→east within a row. Centroids are measured in the district's metric CRS (UTM, metres).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely
from pyproj import Transformer
from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.core.codes import district_of
from geo.core.errors import Conflict, Problem
from geo.planning.geometry import metric_srid
from geo.planning.settings import PlanningSettings


def allocate_codes(conn: Connection, community: str, geoms: list[Any],
                   settings: PlanningSettings) -> list[str]:
    """New grid codes for ``geoms`` (EPSG:4326) in ``community``, by the DB11 rule.

    Numbers continue after the highest ever used in the community (retired ones included);
    rows north→south of ``numbering_row_m`` metres, west→east within a row.
    """
    if not geoms:
        return []
    top = conn.execute(text(
        "SELECT greatest("
        " (SELECT max(substr(code, 13, 3)::int) FROM area WHERE level = 'grid' "
        "  AND parent_code = :c),"
        " (SELECT max(substr(code, 13, 3)::int) FROM retired_code WHERE level = 'grid' "
        "  AND left(code, 12) = :c))"), {"c": community}).scalar() or 0
    if top + len(geoms) > 999:
        raise Conflict(f"community {community} has no free grid numbers left",
                       [Problem(reason=f"{top} used, {len(geoms)} needed", feature=community)])
    srid = metric_srid(conn, district_of(community))
    tr = Transformer.from_crs(4326, srid, always_xy=True)
    cent = shapely.centroid(np.asarray(geoms, dtype=object))
    x, y = tr.transform(shapely.get_x(cent), shapely.get_y(cent))
    north = float(np.max(y))
    comm = conn.execute(text(
        "SELECT ST_YMax(ST_Transform(geom, :s)) FROM area WHERE level = 'community' "
        "AND code = :c AND generation_high IS NULL"), {"c": community, "s": srid}).scalar()
    if comm is not None:
        north = float(comm)
    rows = np.floor((north - np.asarray(y)) / settings.numbering_row_m)
    order = np.lexsort((np.asarray(x), rows))
    codes = [""] * len(geoms)
    for rank, i in enumerate(order):
        codes[int(i)] = f"{community}{top + 1 + rank:03d}"
    return codes
