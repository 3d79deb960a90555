"""Locate a report by a postal address (门牌地址): the point of the building with that address.

Addresses match with case and white space ignored (the expression index of migration 0012);
the answer is the building's location in EPSG:4326 (lon, lat degrees).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.core.errors import InvalidInput, Problem

_NORM = "lower(regexp_replace({}, '\\s+', '', 'g'))"


def locate_address(conn: Connection, address: str, *,
                   field: str = "address_string") -> tuple[float, float]:
    """(lon, lat) in EPSG:4326 of the one building whose address is ``address``; a clear
    ``InvalidInput`` naming ``field`` when none or several buildings have it."""
    if not address.strip() or len(address) > 500 or "\x00" in address:
        raise InvalidInput(f"{field} is not an address",
                           [Problem(reason="empty, NUL or longer than 500 characters",
                                    field=field)])
    rows = conn.execute(text(
        "SELECT DISTINCT ST_X(location) AS lon, ST_Y(location) AS lat FROM building"
        f" WHERE address IS NOT NULL AND {_NORM.format('address')} = {_NORM.format(':a')}"
        " LIMIT 2"), {"a": address}).all()
    if not rows:
        raise InvalidInput(f"{field} matches no known building address", [Problem(
            reason=f"no building has the address '{address}'; give lat and long", field=field)])
    if len(rows) > 1:
        raise InvalidInput(f"{field} matches several buildings", [Problem(
            reason=f"'{address}' is the address of more than one building; give lat and long",
            field=field)])
    return float(rows[0].lon), float(rows[0].lat)
