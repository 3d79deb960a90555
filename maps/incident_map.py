"""The incident map: markers clustered by status, overdue marked, heat map, per-grid choropleths."""

from __future__ import annotations

import folium
import geopandas as gpd
import pandas as pd

from maps.base import (
    JsLayer,
    Legend,
    MapSettings,
    bounds_of,
    feature_collection,
    js_json,
    new_map,
    point_rows,
    renderer_js,
    to_html,
)

STATUS_COLOURS = {
    "reported": "#e67e22",
    "checked_in": "#f1c40f",
    "consulting": "#8e44ad",
    "in_progress": "#2980b9",
    "feedback": "#16a085",
    "rated": "#27ae60",
    "closed": "#7f8c8d",
}
OVERDUE_COLOUR = "#c0392b"

_CLUSTER = ["markerclusterjs", "markerclustercss", "markerclusterdefaultcss"]


def incident_map(
    incidents: gpd.GeoDataFrame,
    *,
    grids: gpd.GeoDataFrame | None = None,
    settings: MapSettings | None = None,
    asset_base: str | None = None,
    title: str = "事件 Incidents",
) -> str:
    """HTML page of the incident map.

    ``incidents``: id, status, Point; optional category, overdue (bool), grid_code,
    satisfaction (1–5, NaN when not rated), reported_at. One cluster overlay per status;
    overdue cases get a red ring and "!"; a heat map of all incidents; with ``grids`` (code,
    name, geometry) two per-grid choropleths: incident count and mean satisfaction.
    """
    settings = settings or MapSettings()
    inc = incidents.copy()
    if "overdue" not in inc:
        inc["overdue"] = False
    inc["overdue"] = inc["overdue"].fillna(False).astype(bool)
    if "category" not in inc:
        inc["category"] = ""
    m = new_map(bounds_of(grids, inc), settings, title=title)

    if grids is not None and not grids.empty:
        g = grids[["code", "name", "geometry"]].copy()
        if "grid_code" in inc:
            sat_col = inc["satisfaction"] if "satisfaction" in inc else float("nan")
            agg = (
                inc.assign(_sat=pd.to_numeric(sat_col, errors="coerce"))
                .groupby("grid_code")
                .agg(incidents=("status", "size"), satisfaction=("_sat", "mean"))
            )
            g = g.join(agg, on="code")
        if "incidents" not in g:
            g["incidents"] = 0
            g["satisfaction"] = float("nan")
        g["incidents"] = g["incidents"].fillna(0).astype(int)
        g["satisfaction"] = pd.to_numeric(g["satisfaction"], errors="coerce").round(2)
        data = feature_collection(
            g,
            ["code", "name", "incidents", "satisfaction"],
            simplify_m=settings.map_simplify_m,
            decimals=settings.map_coordinate_decimals,
        )
        top = max(1, int(g["incidents"].max()))
        renderer = renderer_js(len(g), settings)
        counts = folium.FeatureGroup(name="网格事件数 incidents per grid", show=True).add_to(m)
        counts_layer = JsLayer(
            data,
            """L.geoJson(DATA, {renderer: RENDERER,
            style: function (f) { var v = f.properties.incidents / TOP;
                return {className: 'wg-grid wg-count', color: '#666', weight: 0.6,
                    fillColor: 'rgb(255,' + Math.round(245 - 180 * v) + ','
                        + Math.round(235 - 200 * v) + ')', fillOpacity: 0.5}; },
            }).bindPopup(function (l) { var p = l.feature.properties;
                return wgTable([['网格', wgEsc(p.code) + ' ' + wgEsc(p.name)],
                    ['事件数', p.incidents],
                    ['满意度', p.satisfaction == null ? '—' : p.satisfaction]]); })""".replace(
                "RENDERER", renderer
            ).replace("TOP", str(top)),
        )
        counts.add_child(counts_layer)
        sat = folium.FeatureGroup(name="网格满意度 satisfaction per grid", show=False).add_to(m)
        sat.add_child(
            JsLayer(
                None,
                """L.geoJson(BASE_data, {renderer: RENDERER,
            style: function (f) { var s = f.properties.satisfaction;
                var c = s == null ? '#dddddd' : s >= 4.5 ? '#1a9850' : s >= 4 ? '#91cf60'
                    : s >= 3.5 ? '#fee08b' : s >= 3 ? '#fc8d59' : '#d73027';
                return {className: 'wg-grid wg-sat', color: '#666', weight: 0.6,
                    fillColor: c, fillOpacity: 0.6}; },
            }).bindTooltip(function (l) { var p = l.feature.properties;
                return wgEsc(p.code) + ' 满意度 '
                + (p.satisfaction == null ? '—' : p.satisfaction); })""".replace(
                    "BASE", counts_layer.get_name()
                ).replace("RENDERER", renderer),
                lazy=True,
            )
        )

    statuses = [s for s in STATUS_COLOURS if s in set(inc["status"])] + sorted(
        set(inc["status"]) - set(STATUS_COLOURS)
    )
    for status in statuses:
        sub = inc[inc["status"] == status]
        colour = STATUS_COLOURS.get(status, "#34495e")
        rows = point_rows(sub, ["id", "category", "overdue"], settings.map_coordinate_decimals)
        n_over = int(sub["overdue"].sum())
        group = folium.FeatureGroup(name=f"事件 {status} ({len(sub)}, 超期 {n_over})").add_to(m)
        group.add_child(
            JsLayer(
                rows,
                """L.markerClusterGroup({chunkedLoading: true, animate: false,
                iconCreateFunction: function (c) {
                    var over = c.getAllChildMarkers().filter(function (m) {
                        return m.options.overdue; }).length;
                    return L.divIcon({html: '<div style="background:COLOUR"><span>'
                        + c.getChildCount() + '</span></div>',
                        className: 'marker-cluster wg-cluster wg-cluster-STATUS'
                            + (over ? ' wg-cluster-overdue' : ''),
                        iconSize: L.point(40, 40)}); }})
            .addLayers(DATA.map(function (r) {
                var over = r[4];
                return L.marker([r[0], r[1]], {overdue: over, icon: L.divIcon({
                    className: 'wg-incident wg-incident-STATUS' + (over ? ' wg-overdue' : ''),
                    html: '<div class="wg-pin" style="background:COLOUR;width:18px;height:18px;'
                        + (over ? 'border-color:OVERDUE;border-width:3px' : '') + '">'
                        + (over ? '!' : '') + '</div>',
                    iconSize: [22, 22], iconAnchor: [11, 11]})})
                    .bindPopup(wgTable([['编号', wgEsc(r[2])], ['类别', wgEsc(r[3])],
                        ['状态', 'STATUS'], ['超期', over ? '<b style="color:OVERDUE">是</b>'
                        : '否']]));
            }))""".replace("COLOUR", colour)
                .replace("OVERDUE", OVERDUE_COLOUR)
                .replace("STATUS", _css_ident(status)),
                needs=_CLUSTER,
            )
        )

    heat_rows = [[r[0], r[1]] for r in point_rows(inc, [], settings.map_coordinate_decimals)]
    heat = folium.FeatureGroup(name="热力图 heat map", show=True).add_to(m)
    heat.add_child(
        JsLayer(
            heat_rows,
            "L.heatLayer(DATA, {radius: 22, blur: 18, minOpacity: 0.25})",
            needs=["leaflet-heat.js"],
        )
    )

    folium.LayerControl(collapsed=False).add_to(m)
    rows = [
        (STATUS_COLOURS.get(s, "#34495e"), f"{s}: {int((inc['status'] == s).sum())}")
        for s in statuses
    ]
    rows.append((OVERDUE_COLOUR, f"超期 overdue: {int(inc['overdue'].sum())}"))
    Legend("事件 incidents", rows, note=f"共 {len(inc)} 件; 网格颜色 = 事件数").add_to(m)
    return to_html(m, asset_base=asset_base)


def _css_ident(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(s))


__all__ = ["incident_map", "STATUS_COLOURS", "js_json"]
