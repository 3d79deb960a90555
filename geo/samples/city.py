"""A synthetic city of several districts (and a province of several cities), by seed.

One synthetic lattice city (``geo.samples.synth.generate_city``) is cut along street-block
boundaries into ``districts`` districts: streets are ranked west to east into columns of
districts, and within a column north to south, so each district is a contiguous block of whole
streets and neighbouring districts share their borders exactly (the very same vertices). The
walking network is the lattice's, one network connected across district borders. Codes are
re-numbered per district (GB/T 2260 style): district ``35CCDD`` (city ``35CC``, up to 90
districts a city), streets 001.. in code order of the original streets. City and province
rows carry no geometry: the writer derives them as the union of their districts. EPSG:4326.
"""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from geo.core.errors import InvalidInput, Problem
from geo.samples.synth import METRIC_SRID, generate_city

PROVINCE_CODE = "35"
DISTRICTS_PER_CITY = 90


def district_codes(n: int) -> list[str]:
    """Codes of ``n`` synthetic districts: 350102.., then 350202.. (90 a city)."""
    return [f"{PROVINCE_CODE}{1 + k // DISTRICTS_PER_CITY:02d}{2 + k % DISTRICTS_PER_CITY:02d}"
            for k in range(n)]


def _assign(street: gpd.GeoDataFrame, n: int) -> np.ndarray:
    """District number (0..n-1) of each street: columns west->east, rows north->south."""
    cent = shapely.centroid(np.asarray(street.geometry.values))
    x, y = shapely.get_x(cent), shapely.get_y(cent)
    cols = max(1, math.ceil(math.sqrt(n)))
    per_col = [len(a) for a in np.array_split(np.arange(n), cols)]
    by_x = np.lexsort((-y, np.round(x, 4)))
    col_sizes = np.diff(np.round(np.cumsum([0] + per_col) / n * len(street)).astype(int))
    out = np.empty(len(street), dtype=np.int64)
    start, first = 0, 0
    for c, size in enumerate(col_sizes):
        members = by_x[start:start + size]
        members = members[np.lexsort((x[members], -y[members]))]  # north first
        for j, chunk in enumerate(np.array_split(members, per_col[c])):
            out[chunk] = first + j
        start += size
        first += per_col[c]
    return out


def generate_districts(*, districts: int, grids: int, buildings: int, stations: int,
                       seed: int = 0, team: bool = True) -> dict[str, gpd.GeoDataFrame]:
    """A city (or province) of ``districts`` districts holding ``grids`` grids in all; the
    layers of the contract plus ``city`` and ``province`` (names, no geometry). Same
    arguments, same city."""
    if districts < 1 or districts > 9 * DISTRICTS_PER_CITY:
        raise InvalidInput("invalid number of districts",
                           [Problem(reason=f"1 to {9 * DISTRICTS_PER_CITY}",
                                    field="districts")])
    layers = generate_city(grids=grids, buildings=buildings, stations=stations, seed=seed,
                           team=team)
    street = layers["street"]
    if len(street) < districts:
        raise InvalidInput("too few grids for that many districts",
                           [Problem(reason=f"{grids} grids make {len(street)} streets; each "
                                    "district needs at least one", field="grids")])
    which = _assign(street, districts)
    codes = np.asarray(district_codes(districts), dtype=object)
    old = street["code"].astype(str).to_numpy()
    order = np.lexsort((old, which))
    seq = np.empty(len(old), dtype=np.int64)
    counts = np.bincount(which, minlength=districts)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    seq[order] = np.arange(len(old)) - np.repeat(starts, counts)
    new = [f"{codes[d]}{s + 1:03d}" for d, s in zip(which, seq, strict=True)]
    mapping = dict(zip(old, new, strict=True))

    def recode(values: pd.Series) -> pd.Series:
        v = values.astype(str)
        return v.str[:9].map(mapping) + v.str[9:]

    for name, cols in (("street", ("code",)), ("community", ("code", "parent_code")),
                       ("grid", ("code", "parent_code")), ("building", ("code", "grid_code")),
                       ("station", ("community_code",)), ("grid_team", ("grid_code",))):
        if name in layers:
            for col in cols:
                layers[name][col] = recode(layers[name][col]).to_numpy()
    street["parent_code"] = [c[:6] for c in street["code"]]
    geoms = np.asarray(street.geometry.values)
    d_geoms = [shapely.coverage_union_all(geoms[which == d]) for d in range(districts)]
    layers["district"] = gpd.GeoDataFrame({
        "code": codes, "name": [f"合成{k + 1}区" for k in range(districts)],
        "metric_srid": METRIC_SRID,
    }, geometry=d_geoms, crs=4326)
    city_codes = sorted({c[:4] for c in codes})
    layers["city"] = gpd.GeoDataFrame({
        "code": city_codes, "name": [f"合成{i + 1}市" for i in range(len(city_codes))],
    }, geometry=[None] * len(city_codes), crs=4326)
    layers["province"] = gpd.GeoDataFrame({"code": [PROVINCE_CODE], "name": ["合成省"]},
                                          geometry=[None], crs=4326)
    return layers
