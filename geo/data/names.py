"""What data offices call layers and fields, and what wangge calls them.

A district's GeoPackage names its layers ``grids``, ``communities``, ``网格`` and its fields
``WGBM`` (网格编码), ``WGMC`` (网格名称), ``SQBM``/``SQMC`` (社区编码/名称), ``JDBM``/``JDMC``
(街道), ``QXBM``/``QXMC`` (区县). ``layer_key`` and ``field_aliases`` read the common ones
automatically (every rename is reported); anything else is named with a mapping
(``--map grid=网格 --field code=WGBH``, parsed by ``parse_pairs``).
"""

from __future__ import annotations

from typing import Any

import geopandas as gpd

from geo.core.errors import InvalidInput, Problem

# Layer names as data offices give them (plural, Chinese) -> wangge's layer names.
LAYER_ALIASES: dict[str, str] = {
    **{f"{n}s": n for n in ("district", "street", "community", "grid", "compound", "building",
                            "station", "barrier")},
    "communities": "community", "grid_teams": "grid_team", "walk_edges": "walk_edge",
    "区": "district", "区县": "district", "街道": "street", "乡镇街道": "street",
    "社区": "community", "村居": "community", "网格": "grid", "网格员": "grid_team",
    "网格团队": "grid_team", "小区": "compound", "楼栋": "building", "建筑": "building",
    "建筑物": "building", "站点": "station", "服务站": "station", "障碍": "barrier",
}

# Field names per layer (upper-cased pinyin initials as Chinese data offices use them, and
# the Chinese words) -> wangge's field names. A field is renamed only where the layer does not
# already have wangge's field.
_DISTRICT = {"QXBM": "code", "QXMC": "name", "区县编码": "code", "区县名称": "name"}
_STREET = {"JDBM": "code", "JDMC": "name", "QXBM": "parent_code", "街道编码": "code",
           "街道名称": "name", "区县编码": "parent_code"}
_COMMUNITY = {"SQBM": "code", "SQMC": "name", "JDBM": "parent_code", "社区编码": "code",
              "社区名称": "name", "街道编码": "parent_code"}
_GRID = {"WGBM": "code", "WGMC": "name", "WGBH": "code", "SQBM": "parent_code",
         "ZRDW": "responsible_body", "ZRZT": "responsible_body", "网格编码": "code",
         "网格编号": "code", "网格名称": "name", "社区编码": "parent_code",
         "责任单位": "responsible_body", "责任主体": "responsible_body"}
_BUILDING = {"LDBM": "code", "LDMC": "name", "HS": "households", "RK": "residents",
             "CS": "floors", "WGBM": "grid_code", "楼栋编码": "code", "楼栋名称": "name",
             "户数": "households", "人口": "residents", "人数": "residents", "层数": "floors",
             "所属网格": "grid_code"}
FIELD_ALIASES: dict[str, dict[str, str]] = {
    "district": _DISTRICT, "street": _STREET, "community": _COMMUNITY, "grid": _GRID,
    "building": _BUILDING,
}
_ANY_LAYER = {"BM": "code", "MC": "name", "编码": "code", "代码": "code", "名称": "name"}


MAX_PAIRS = 50  # OURS=THEIRS items of one mapping
MAX_PAIR_CHARS = 200


def layer_key(name: str) -> str:
    """wangge's layer name for a file's layer name (``grids``, ``网格`` -> ``grid``)."""
    return LAYER_ALIASES.get(name.strip().lower(), name)


def field_aliases(gdf: gpd.GeoDataFrame, layer: str,
                  renamed: list[dict[str, Any]] | None = None) -> gpd.GeoDataFrame:
    """``gdf`` with the common data-office field names of ``layer`` renamed to wangge's
    (``WGBM`` -> ``code`` in a grid layer); each rename appended to ``renamed`` as
    ``{"layer", "field", "as"}``. A field wangge already has is never replaced."""
    table = {**_ANY_LAYER, **FIELD_ALIASES.get(layer, {})}
    have = set(gdf.columns)
    rename: dict[str, str] = {}
    for col in gdf.columns:
        ours = table.get(str(col).strip().upper())
        if ours and ours not in have:
            rename[col] = ours
            have.add(ours)
    for theirs, ours in rename.items():
        if renamed is not None:
            renamed.append({"layer": layer, "field": str(theirs), "as": ours})
    return gdf.rename(columns=rename) if rename else gdf


def parse_pairs(items: list[str] | None, field: str) -> dict[str, str]:
    """``["grid=网格", ...]`` as ``{"grid": "网格"}`` (OURS=THEIRS); a malformed item is
    refused (422 naming ``field``)."""
    out: dict[str, str] = {}
    items = items or []
    if len(items) > MAX_PAIRS:
        raise InvalidInput(f"too many {field} items", [Problem(
            reason=f"{len(items)} given, at most {MAX_PAIRS}", field=field)])
    bad = [Problem(reason=f"longer than {MAX_PAIR_CHARS} characters", field=field)
           for item in items if len(item) > MAX_PAIR_CHARS]
    for item in items:
        ours, sep, theirs = item.partition("=")
        if not sep or not ours.strip() or not theirs.strip():
            bad.append(Problem(reason=f"{item!r}: expected OURS=THEIRS", field=field))
        else:
            out[ours.strip()] = theirs.strip()
    if bad:
        raise InvalidInput(f"malformed {field}", bad)
    return out
