"""geo.data.crs: the UTM zone of a point (checked against pyproj's own UTM catalogue) and the
district's metric SRID read from the database."""

from __future__ import annotations

import pytest
from factories import AREAS_GEN1, D, write_generation
from pyproj.aoi import AreaOfInterest
from pyproj.database import query_utm_crs_info

from geo.core.errors import NotFound
from geo.data.crs import district_metric_srid, utm_epsg


@pytest.mark.parametrize("lon, lat", [
    (119.3, 26.05),  # Fuzhou, 50N
    (24.94, 60.17),  # Helsinki, 35N
    (-46.63, -23.55),  # São Paulo, south of the equator: 23S
    (151.21, -33.87),  # Sydney, 56S
    (-179.5, 10.0),  # first zone
    (179.5, -10.0),  # last zone, south
])
def test_utm_zone_matches_pyproj(lon: float, lat: float) -> None:
    (info,) = [i for i in query_utm_crs_info(
        datum_name="WGS 84", area_of_interest=AreaOfInterest(lon, lat, lon, lat))
        if "UTM zone" in i.name]
    assert utm_epsg(lon, lat) == int(info.code)


def test_lon_180_is_a_real_zone() -> None:
    # 180° E is 180° W: zone 1 or 60 both border it; zone 61 (an old copy's answer) is no zone
    assert utm_epsg(180.0, 10.0) in (32601, 32660)
    assert utm_epsg(180.0, -10.0) in (32701, 32760)


def test_district_metric_srid(conn) -> None:
    with pytest.raises(NotFound):
        district_metric_srid(conn)
    write_generation(conn, AREAS_GEN1, "2025-01-01T00:00:00+08:00")
    assert district_metric_srid(conn) == 32650  # stored with the hand-made district
    assert district_metric_srid(conn, D) == 32650
    with pytest.raises(NotFound):
        district_metric_srid(conn, "999999")
