"""The grid map: streets, communities and grids, coloured by household load, with the four networks.

Inputs are GeoDataFrames in EPSG:4326 (see :func:`grid_map`). Output is one HTML page.
"""

from __future__ import annotations

from typing import Any

import folium
import geopandas as gpd
import pandas as pd

from maps.base import (
    JsLayer,
    Legend,
    MapSettings,
    bounds_of,
    feature_collection,
    new_map,
    point_rows,
    renderer_js,
    to_html,
)

STATUS_COLOURS = {"under": "#4f8fd6", "balanced": "#53a548", "over": "#d64541"}
STATUS_LABELS = {"under": "户数不足 under", "balanced": "均衡 balanced", "over": "超载 over"}

ROLE_LABELS = {
    "grid_leader": "网格长",
    "responsible_cadre": "包网干部",
    "community_police": "社区民警",
    "urban_management": "城管执法队员",
    "market_supervisor": "市场监管员",
    "judicial_mediator": "司法调解员",
    "community_medic": "社区医生",
    "grid_worker": "网格员",
    "volunteer": "志愿者",
}

# 四张网: the four networks drawn over the same base grid. Each lists the team roles and the
# station kinds that belong to it.
NETWORKS: dict[str, dict[str, Any]] = {
    "party": {
        "label": "党建网 party-building",
        "colour": "#c0392b",
        "roles": ["grid_leader", "responsible_cadre"],
        "kinds": ["party_service_center", "party_service_station"],
    },
    "safety": {
        "label": "平安网 public-safety",
        "colour": "#1f4e9c",
        "roles": ["community_police", "urban_management", "judicial_mediator"],
        "kinds": [],
    },
    "livelihood": {
        "label": "民生网 livelihood",
        "colour": "#1e8449",
        "roles": ["community_medic", "grid_worker", "volunteer"],
        "kinds": ["social_work_station", "elder_canteen", "elderly_daycare", "health_station"],
    },
    "enterprise": {
        "label": "企业服务网 enterprise-service",
        "colour": "#b9770e",
        "roles": ["market_supervisor"],
        "kinds": ["rest_post"],
    },
}


def balance_status(households: pd.Series, households_min: int, households_max: int) -> pd.Series:
    """'under' / 'balanced' / 'over' for each grid's household count against the balance rule."""
    h = households.fillna(0)
    out = pd.Series("balanced", index=households.index, dtype=object)
    out[h < households_min] = "under"
    out[h > households_max] = "over"
    return out


def _team_rows(team: Any) -> list[list[str]]:
    """Normalise a team cell (list of dicts or [role, name, phone] lists) to [role, name, phone]."""
    if team is None or (isinstance(team, float) and team != team):
        return []
    rows = []
    for member in team:
        if isinstance(member, dict):
            rows.append([member.get("role", ""), member.get("name", ""), member.get("phone") or ""])
        else:
            role, name, *rest = list(member)
            rows.append([role, name, (rest[0] if rest else "") or ""])
    return rows


def _outline_layer(gdf: gpd.GeoDataFrame, settings: MapSettings, css: str, style: str) -> JsLayer:
    data = feature_collection(
        gdf,
        [c for c in ("code", "name") if c in gdf.columns],
        simplify_m=settings.map_simplify_m,
        decimals=settings.map_coordinate_decimals,
    )
    n = len(data["features"])
    js = (
        "L.geoJson(DATA, {renderer: " + renderer_js(n, settings) + ", "
        "style: function () { return Object.assign({className: '" + css + "'}, " + style + "); },"
        "}).bindTooltip(function (l) { return wgEsc(l.feature.properties.code) + ' ' + "
        "wgEsc(l.feature.properties.name); })"
    )
    return JsLayer(data, js)


def grid_map(
    grids: gpd.GeoDataFrame,
    *,
    streets: gpd.GeoDataFrame | None = None,
    communities: gpd.GeoDataFrame | None = None,
    stations: gpd.GeoDataFrame | None = None,
    households_min: int = 150,
    households_max: int = 500,
    settings: MapSettings | None = None,
    asset_base: str | None = None,
    title: str = "网格图 Grids",
) -> str:
    """HTML page of the grid map.

    ``grids``: code, name, households (int), optional parent_code, responsible_body, status
    (under/balanced/over; computed from the balance rule if absent) and team (list of members,
    each a dict with role, name, phone or a [role, name, phone] list), geometry (Multi)Polygon.
    ``streets`` / ``communities``: code, name, geometry. ``stations``: code, name, kind, Point.
    ``asset_base``: None inlines JS/CSS; else the URL prefix of the served vendor directory.
    """
    settings = settings or MapSettings()
    grids = grids.copy()
    if "status" not in grids.columns:
        grids["status"] = balance_status(grids["households"], households_min, households_max)
    role_index = {r: i for i, r in enumerate(ROLE_LABELS)}
    grids["team"] = (
        [[[role_index.get(r, r), nm, ph] for r, nm, ph in _team_rows(t)] for t in grids["team"]]
        if "team" in grids
        else [[]] * len(grids)
    )
    cols = [
        c
        for c in ("code", "name", "households", "status", "team", "responsible_body")
        if c in grids.columns
    ]
    n = len(grids)
    m = new_map(bounds_of(grids, communities, streets), settings, title=title)

    # Base grid layer.
    data = feature_collection(
        grids, cols, simplify_m=settings.map_simplify_m, decimals=settings.map_coordinate_decimals
    )
    base_group = folium.FeatureGroup(name="网格 grids (按户数 by households)", show=True)
    base_group.add_to(m)
    base = JsLayer(
        data,
        """L.geoJson(DATA, {renderer: RENDERER,
            style: function (f) { return {className: 'wg-grid wg-' + f.properties.status,
                color: '#555', weight: 0.8, fillOpacity: 0.45,
                fillColor: COLOURS[f.properties.status] || '#999'}; },
            }).bindTooltip(function (l) {
                var p = l.feature.properties; return wgEsc(p.code) + ' ' + wgEsc(p.name);
            }).bindPopup(function (l) {
                var p = l.feature.properties, rows = [['网格编码', wgEsc(p.code)],
                    ['名称', wgEsc(p.name)], ['户数', wgEsc(p.households)],
                    ['状态', wgEsc(LABELS[p.status] || p.status)]];
                if (p.responsible_body) rows.push(['责任主体', wgEsc(p.responsible_body)]);
                (p.team || []).forEach(function (t) {
                    var r = ROLES[t[0]] || t[0];
                    rows.push([ROLENAMES[r] || r, wgEsc(t[1]) + ' ' + wgEsc(t[2])]);
                });
                return wgTable(rows);
            })""".replace("RENDERER", renderer_js(n, settings))
        .replace("COLOURS", _js(STATUS_COLOURS))
        .replace("LABELS", _js(STATUS_LABELS))
        .replace("ROLENAMES", _js(ROLE_LABELS))
        .replace("ROLES", _js(list(ROLE_LABELS))),
    )
    base_group.add_child(base)

    if communities is not None and not communities.empty:
        g = folium.FeatureGroup(name="社区 communities", show=True).add_to(m)
        g.add_child(
            _outline_layer(
                communities,
                settings,
                "wg-community",
                "{color: '#333', weight: 2, fill: false, dashArray: '6 4'}",
            )
        )
    if streets is not None and not streets.empty:
        g = folium.FeatureGroup(name="街道 streets", show=True).add_to(m)
        g.add_child(
            _outline_layer(
                streets, settings, "wg-street", "{color: '#000', weight: 3.5, fill: false}"
            )
        )

    # The four networks over the same base grid: the base layer's data is reused (not copied).
    for key, net in NETWORKS.items():
        g = folium.FeatureGroup(name=net["label"], show=False).add_to(m)
        js = """L.geoJson(BASE_data, {renderer: RENDERER,
            style: function () { return {className: 'wg-net wg-net-KEY', color: 'COLOUR',
                weight: 1.6, dashArray: '4 3', fillColor: 'COLOUR', fillOpacity: 0.08}; },
            }).bindPopup(function (l) {
                var p = l.feature.properties;
                var rows = [['网格', wgEsc(p.code) + ' ' + wgEsc(p.name)]];
                (p.team || []).forEach(function (t) {
                    var r = ROLES[t[0]] || t[0];
                    if (ROLESET.indexOf(r) >= 0)
                        rows.push([ROLENAMES[r] || r, wgEsc(t[1]) + ' ' + wgEsc(t[2])]);
                });
                return '<b>LABEL</b>' + wgTable(rows);
            })"""
        js = (
            js.replace("BASE", base.get_name())
            .replace("RENDERER", renderer_js(n, settings))
            .replace("KEY", key)
            .replace("COLOUR", net["colour"])
            .replace("ROLESET", _js(net["roles"]))
            .replace("ROLENAMES", _js(ROLE_LABELS))
            .replace("ROLES", _js(list(ROLE_LABELS)))
            .replace("LABEL", net["label"])
        )
        g.add_child(JsLayer(None, js, lazy=True))
        if stations is not None and not stations.empty and net["kinds"]:
            sub = stations[stations["kind"].isin(net["kinds"])]
            if not sub.empty:
                g.add_child(
                    _station_points(
                        sub, net["colour"], f"wg-station wg-net-station-{key}", settings
                    )
                )

    folium.LayerControl(collapsed=False).add_to(m)
    counts = grids["status"].value_counts()
    rows = [
        (STATUS_COLOURS[s], f"{STATUS_LABELS[s]}: {int(counts.get(s, 0))}")
        for s in ("under", "balanced", "over")
    ]
    rows += [(net["colour"], net["label"]) for net in NETWORKS.values()]
    Legend(
        f"网格户数 households ({households_min}–{households_max})",
        rows,
        note=f"{n} 个网格 grids",
    ).add_to(m)
    return to_html(m, asset_base=asset_base)


def _station_points(
    stations: gpd.GeoDataFrame, colour: str, css: str, settings: MapSettings
) -> JsLayer:
    rows = point_rows(stations, ["code", "name", "kind"], settings.map_coordinate_decimals)
    js = (
        "L.layerGroup(DATA.map(function (r) { return L.circleMarker([r[0], r[1]], "
        "{radius: 6, color: '#fff', weight: 1.5, fillColor: '" + colour + "', fillOpacity: 1, "
        "className: '" + css + "'}).bindTooltip(wgEsc(r[3]) + ' (' + wgEsc(r[4]) + ')'); }))"
    )
    return JsLayer(rows, js)


def _js(obj: Any) -> str:
    from maps.base import js_json

    return js_json(obj)
