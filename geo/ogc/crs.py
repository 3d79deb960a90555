"""CRS by reference (OGC API Features Part 2): URIs, SRIDs and axis order.

CRS84 is lon,lat; EPSG:4326 and EPSG:4490 (CGCS2000) are lat,lon by their EPSG definition,
so coordinates are swapped in and out for them; a UTM zone (EPSG:326xx) is easting,northing.
Transforms run in PostGIS (``ST_Transform``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.core.errors import Problem, WanggeError
from geo.data.crs import utm_epsg

CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
EPSG = "http://www.opengis.net/def/crs/EPSG/0/"
_EPSG_RE = re.compile(r"^(?:http://www\.opengis\.net/def/crs/EPSG/0/|EPSG:|\[EPSG:)(\d{4,5})\]?$")


class BadParameter(WanggeError):
    """A query parameter of an OGC API request is malformed or out of range (400)."""


@dataclass(frozen=True)
class Crs:
    """A CRS a client may ask for: its URI, PostGIS SRID and whether axes are lat,lon."""

    uri: str
    srid: int
    latlon: bool

    @property
    def digits(self) -> int:
        """Decimal digits of coordinates: 9 for degrees (0.1 mm), 4 for metres."""
        return 9 if self.srid in (4326, 4490) else 4


DEFAULT = Crs(CRS84, 4326, False)


def district_utm(conn: Connection) -> int:
    """EPSG code of the district's UTM zone (``metric_srid``, else from its centroid)."""
    row = conn.execute(text(
        "SELECT metric_srid, ST_X(ST_Centroid(geom)) AS x, ST_Y(ST_Centroid(geom)) AS y "
        "FROM area_current WHERE level = 'district' ORDER BY code LIMIT 1")).first()
    if row is None:
        return 32650
    if row.metric_srid and 32601 <= row.metric_srid <= 32760:
        return int(row.metric_srid)
    return utm_epsg(float(row.x), float(row.y))


def supported(utm: int) -> list[Crs]:
    """The CRSs served: CRS84 (default), EPSG:4326, EPSG:4490 and the district's UTM zone."""
    return [Crs(CRS84, 4326, False), Crs(EPSG + "4326", 4326, True),
            Crs(EPSG + "4490", 4490, True), Crs(EPSG + str(utm), utm, False)]


def parse_crs(value: str | None, utm: int, *, field: str = "crs") -> Crs:
    """The CRS named by ``value`` (a URI, ``EPSG:n`` or ``[EPSG:n]``); CRS84 when None."""
    options = supported(utm)
    if value is None or value.strip() in (CRS84, "[OGC:CRS84]", "OGC:CRS84", "CRS84"):
        return options[0]
    m = _EPSG_RE.match(value.strip())
    if m:
        for c in options[1:]:
            if c.srid == int(m.group(1)):
                return c
    raise BadParameter(f"unsupported {field}", [Problem(
        reason=f"'{value}' is not one of {', '.join(c.uri for c in options)}", field=field)])


def geometry_out(column: str, crs: Crs) -> str:
    """SQL expression: ``column`` (SRID 4326) in ``crs`` with its axis order."""
    expr = column if crs.srid == 4326 else f"ST_Transform({column}, {int(crs.srid)})"
    return f"ST_FlipCoordinates({expr})" if crs.latlon else expr


def geometry_in(expr: str, crs: Crs) -> str:
    """SQL expression: geometry ``expr`` given in ``crs`` (its axis order) as SRID 4326."""
    if crs.latlon:
        expr = f"ST_FlipCoordinates({expr})"
    expr = f"ST_SetSRID({expr}, {int(crs.srid)})"
    return expr if crs.srid == 4326 else f"ST_Transform({expr}, 4326)"
