"""Validation rules, on the hand-made sample district (known answers), without writing."""

from __future__ import annotations

import sys
from pathlib import Path

import geopandas as gpd
import pytest
from shapely.geometry import Point, Polygon, box

from geo.core.errors import (
    InvalidInput,
    OutsideDistrict,
    PayloadTooLarge,
    SwappedCoordinates,
    UnknownCRS,
)
from geo.core.settings import DataSettings
from geo.data.crs import metric_crs_for, resolve_crs
from geo.data.validate import validate_layers

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "data" / "shapefiles"))
from make_samples import X0, XM, Y1, YM, sample_layers


def problems(exc: InvalidInput) -> list[dict]:
    return [p.as_dict() for p in exc.problems]


def test_good_sample_passes() -> None:
    out = validate_layers(None, sample_layers())
    assert len(out["grid"]) == 4


def test_bowtie_named_and_repaired() -> None:
    layers = sample_layers()
    layers["grid"].loc[1, "geometry"] = Polygon([(X0, 26.03), (XM, YM), (XM, 26.03), (X0, YM)])
    with pytest.raises(InvalidInput) as err:
        validate_layers(None, layers)
    ps = problems(err.value)
    bow = [p for p in ps if p["detail"]["rule"] == "invalid_geometry"]
    assert len(bow) == 1
    assert bow[0]["field"] == "geometry" and "350104001001002" in bow[0]["feature"]
    assert "Self-intersection" in bow[0]["reason"]
    fixed = validate_layers(None, layers, repair=True)
    g = fixed["grid"].geometry.iloc[1]
    assert g.is_valid and g.geom_type == "MultiPolygon"
    # make_valid of this bowtie keeps both triangles: half the grid's box area.
    assert g.area == pytest.approx(box(X0, 26.03, XM, YM).area / 2, rel=1e-9)


def test_swapped_detected() -> None:
    layers = sample_layers()
    layers["station"].loc[0, "geometry"] = Point(26.055, 119.295)
    with pytest.raises(SwappedCoordinates) as err:
        validate_layers(None, layers)
    (p,) = problems(err.value)
    assert "S1" in p["feature"] and "swapped" in p["reason"] and p["field"] == "geometry"


def test_swapped_detected_without_district_by_china_bbox() -> None:
    layers = {"station": sample_layers()["station"]}
    layers["station"].loc[1, "geometry"] = Point(26.045, 119.305)
    with pytest.raises(SwappedCoordinates):
        validate_layers(None, layers)


def test_outside_district() -> None:
    layers = sample_layers()
    layers["building"].loc[2, "geometry"] = Point(119.40, 26.05)  # 8 km east of the box
    with pytest.raises(OutsideDistrict) as err:
        validate_layers(None, layers)
    (p,) = problems(err.value)
    assert "B3" in p["feature"] and "outside the district" in p["reason"]


def test_duplicate_codes_and_code_rules_all_collected() -> None:
    layers = sample_layers()
    layers["grid"].loc[3, "code"] = "350104001002001"  # duplicate of feature 2
    layers["street"].loc[0, "code"] = "350104400"  # street number > 399
    with pytest.raises(InvalidInput) as err:
        validate_layers(None, layers)
    ps = problems(err.value)
    dups = [p for p in ps if p["detail"]["rule"] == "duplicate_code"]
    assert {p["detail"]["index"] for p in dups} == {2, 3}
    assert any(p["detail"]["rule"] == "code_rule" and p["feature"].startswith("street")
               and "001-399" in p["reason"] for p in ps)


def test_grid_not_inside_community_and_overlap() -> None:
    layers = sample_layers()
    # North-west grid pushed 0.001 deg east: sticks out of the west community and overlaps
    # the south-west grid? No: it overlaps nothing in its community, but sticks out ~100 m x 2 km.
    layers["grid"].loc[0, "geometry"] = box(X0 + 0.001, YM, XM + 0.001, Y1)
    # South-west grid grown north by 0.001 deg: overlaps the north-west grid.
    layers["grid"].loc[1, "geometry"] = box(X0, 26.03, XM, YM + 0.001)
    with pytest.raises(InvalidInput) as err:
        validate_layers(None, layers)
    ps = problems(err.value)
    outside = [p for p in ps if p["detail"]["rule"] == "not_inside_parent"]
    assert [p["detail"]["code"] for p in outside] == ["350104001001001"]
    # Independent area: 0.001 deg x 0.02 deg in UTM 50N.
    utm = metric_crs_for(box(119.28, 26.03, 119.32, 26.07))
    expected = gpd.GeoSeries([box(XM, YM, XM + 0.001, Y1)], crs=4326).to_crs(utm).area.iloc[0]
    assert outside[0]["detail"]["outside_m2"] == pytest.approx(expected, rel=1e-6)
    overlap = [p for p in ps if p["detail"]["rule"] == "overlap"]
    assert len(overlap) == 1
    exp_ov = gpd.GeoSeries([box(X0 + 0.001, YM, XM, YM + 0.001)], crs=4326).to_crs(utm).area
    assert overlap[0]["detail"]["overlap_m2"] == pytest.approx(exp_ov.iloc[0], rel=1e-6)


def test_missing_field_and_value() -> None:
    layers = sample_layers()
    layers["grid"] = layers["grid"].drop(columns="responsible_body")
    layers["station"].loc[0, "kind"] = "karaoke"
    with pytest.raises(InvalidInput) as err:
        validate_layers(None, layers)
    ps = problems(err.value)
    assert any(p["field"] == "responsible_body" and "missing" in p["reason"] for p in ps)
    assert any(p["field"] == "kind" and "karaoke" in p["reason"] for p in ps)


def test_too_many_features() -> None:
    with pytest.raises(PayloadTooLarge):
        validate_layers(None, sample_layers(), settings=DataSettings(max_import_features=10))


def test_crs_resolution() -> None:
    with pytest.raises(UnknownCRS) as err:
        resolve_crs("grid", None)
    assert err.value.problems[0].feature == "grid"
    with pytest.raises(UnknownCRS):
        resolve_crs("grid", "EPSG:999999")
    assert resolve_crs("grid", "EPSG:4547").to_epsg() == 4547
    assert metric_crs_for((119.28, 26.03, 119.32, 26.07)) == 32650
    assert metric_crs_for(box(24.93, 60.16, 24.95, 60.18)) == 32635


def test_features_clipped_to_a_zigzag_border_are_inside() -> None:
    """Issue 15 item 14: shapely.covers fails on a 1e-17° crossing of a zigzag border; the part
    outside is then empty and must not be refused as 'outside the district'."""
    import numpy as np
    import shapely

    rng = np.random.default_rng(0)
    t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    r = 0.01 * (1 + 0.3 * rng.random(40))
    zigzag = Polygon(np.c_[119.3 + r * np.cos(t), 26.05 + r * np.sin(t)])
    xs = np.linspace(119.288, 119.312, 7)
    cells = [shapely.intersection(box(a, 26.035, b, 26.065), zigzag)
             for a, b in zip(xs[:-1], xs[1:], strict=True)]
    # the premise, checked independently: covers() fails, yet nothing lies outside
    assert not all(shapely.covers(zigzag, g) for g in cells)
    assert all(shapely.difference(g, zigzag).is_empty for g in cells)
    layers = {
        "district": gpd.GeoDataFrame({"code": ["350104"], "name": ["区"], "metric_srid": [32650]},
                                     geometry=[zigzag], crs=4326),
        "compound": gpd.GeoDataFrame({"code": [f"c{i}" for i in range(len(cells))],
                                      "name": "小区"}, geometry=cells, crs=4326),
    }
    validate_layers(None, layers)  # no OutsideDistrict
    # and a feature that really sticks out is still refused
    layers["compound"].loc[0, "geometry"] = box(119.28, 26.035, 119.29, 26.065)
    with pytest.raises(InvalidInput) as err:
        validate_layers(None, layers)
    assert "outside the district" in str(problems(err.value))


def test_parent_codes_and_metric_crs_are_derived() -> None:
    """Issue 15 item 14: a parent code is the code's prefix, a district's metric CRS follows
    from its location (UTM 50N at 119.3°E, north: EPSG:32650, from the zone formula)."""
    layers = sample_layers()
    expected = {n: list(layers[n]["parent_code"].astype(str)) for n in
                ("street", "community", "grid")}
    layers["street"] = layers["street"].drop(columns="parent_code")
    layers["community"]["parent_code"] = None
    layers["grid"].loc[0, "parent_code"] = ""
    layers["district"] = layers["district"].drop(columns="metric_srid")
    out = validate_layers(None, layers)
    for name, parents in expected.items():
        assert list(out[name]["parent_code"].astype(str)) == parents
    lon = float(layers["district"].geometry.iloc[0].centroid.x)
    assert int(out["district"]["metric_srid"].iloc[0]) == 32600 + int((lon + 180) // 6) + 1


def test_slivers_thinner_than_the_width_are_not_counted() -> None:
    """Issue 15 item 14: a grid digitised separately sticks out of its community by a strip
    0.2 m wide along its 2.2 km east edge (~450 m², far above the 1 m² tolerance): a sliver,
    accepted at the default width 0.5 m; a 3 m strip is still refused."""
    import numpy as np
    from pyproj import Geod

    def widened(metres: float) -> Polygon:
        dlon = metres / (111_320 * np.cos(np.radians((YM + Y1) / 2)))
        return box(X0, YM, XM + dlon, Y1)

    strip = widened(0.2).difference(box(X0, YM, XM, Y1))
    assert abs(Geod(ellps="WGS84").geometry_area_perimeter(strip)[0]) > 100  # independent
    layers = sample_layers()
    layers["grid"].loc[0, "geometry"] = widened(0.2)
    validate_layers(None, layers)
    with pytest.raises(InvalidInput) as err:
        validate_layers(None, layers, settings=DataSettings(sliver_width_m=0))
    assert any(p["detail"]["rule"] == "not_inside_parent" for p in problems(err.value))
    layers["grid"].loc[0, "geometry"] = widened(3.0)
    with pytest.raises(InvalidInput) as err:
        validate_layers(None, layers)
    assert any(p["detail"]["rule"] == "not_inside_parent" for p in problems(err.value))
