"""Coordinate conversions against an independent implementation (prcoords, PyPI)."""

from __future__ import annotations

import numpy as np
import prcoords
import pytest

from geo.core.errors import UnknownCRS
from geo.data import coords

M_PER_DEG = 111_320.0


@pytest.fixture(scope="module")
def china_points():
    rng = np.random.default_rng(7)
    return rng.uniform(74, 134, 1500), rng.uniform(19, 52, 1500)


def test_gcj02_forward_matches_prcoords(china_points):
    lon, lat = china_points
    gx, gy = coords.from_wgs84(lon, lat, "gcj02")
    ref = np.array([prcoords.wgs_gcj((b, a)) for a, b in zip(lon, lat, strict=True)])  # (lat, lon)
    assert np.abs(gx - ref[:, 1]).max() * M_PER_DEG < 0.001
    assert np.abs(gy - ref[:, 0]).max() * M_PER_DEG < 0.001
    # the offset itself is real: tens to hundreds of metres
    assert np.hypot(gx - lon, gy - lat).max() * M_PER_DEG > 50


def test_bd09_forward_matches_prcoords(china_points):
    lon, lat = china_points
    bx, by = coords.from_wgs84(lon, lat, "bd09")
    ref = np.array([prcoords.wgs_bd((b, a)) for a, b in zip(lon, lat, strict=True)])
    assert np.abs(bx - ref[:, 1]).max() * M_PER_DEG < 0.001
    assert np.abs(by - ref[:, 0]).max() * M_PER_DEG < 0.001


def test_inverse_agrees_with_prcoords_precise_inverse(china_points):
    lon, lat = china_points
    gx, gy = coords.from_wgs84(lon, lat, "gcj02")
    wx, wy = coords.to_wgs84(gx, gy, "gcj02")
    ref = np.array([prcoords.gcj_wgs_bored((b, a))
                    for a, b in zip(gx[:300], gy[:300], strict=True)])
    # prcoords' own iteration stops at ~1e-5 m precision class; agree within 1 cm
    assert np.abs(wx[:300] - ref[:, 1]).max() * M_PER_DEG < 0.01
    assert np.abs(wy[:300] - ref[:, 0]).max() * M_PER_DEG < 0.01


@pytest.mark.parametrize("crs", ["gcj02", "bd09"])
def test_round_trip_below_one_centimetre(crs):
    rng = np.random.default_rng(3)
    lon, lat = rng.uniform(73, 135, 200_000), rng.uniform(18, 53, 200_000)
    cx, cy = coords.from_wgs84(lon, lat, crs)
    wx, wy = coords.to_wgs84(cx, cy, crs)
    err_m = np.hypot((wx - lon) * M_PER_DEG * np.cos(np.radians(lat)), (wy - lat) * M_PER_DEG)
    assert err_m.max() < 0.01


def test_outside_china_passes_through():
    lon = np.array([2.35, -74.0, 139.7, 100.0])
    lat = np.array([48.85, 40.7, 35.7, -5.0])  # Paris, New York, Tokyo, south of the box
    for crs in ("gcj02", "bd09"):
        x, y = coords.from_wgs84(lon, lat, crs)
        assert np.array_equal(x, lon) and np.array_equal(y, lat)
        x, y = coords.to_wgs84(lon, lat, crs)
        assert np.array_equal(x, lon) and np.array_equal(y, lat)


def test_cgcs2000_is_wgs84_and_unknown_crs_refused():
    x, y = coords.to_wgs84(119.3, 26.05, "CGCS2000")
    assert float(x) == 119.3 and float(y) == 26.05
    with pytest.raises(UnknownCRS) as exc:
        coords.to_wgs84(119.3, 26.05, "epsg:3857")
    assert exc.value.problems[0].field == "crs"
