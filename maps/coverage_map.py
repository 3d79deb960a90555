"""The coverage map: service circles by station kind, uncovered buildings, suggested sites."""

from __future__ import annotations

import folium
import geopandas as gpd

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

KIND_COLOURS = {
    "party_service_center": "#c0392b",
    "party_service_station": "#e74c3c",
    "social_work_station": "#8e44ad",
    "elder_canteen": "#d35400",
    "elderly_daycare": "#f39c12",
    "health_station": "#16a085",
    "rest_post": "#2c7fb8",
}
KIND_LABELS = {
    "party_service_center": "党群服务中心 party service centre",
    "party_service_station": "党群服务站 party service station",
    "social_work_station": "社工站 social work",
    "elder_canteen": "长者食堂 elder canteen",
    "elderly_daycare": "养老服务照料中心 elderly day-care",
    "health_station": "卫生服务站 health station",
    "rest_post": "暖心驿站 rest post",
}


def coverage_map(
    stations: gpd.GeoDataFrame,
    *,
    circles: gpd.GeoDataFrame | None = None,
    radius_m: float = 1000.0,
    uncovered: gpd.GeoDataFrame | None = None,
    grids: gpd.GeoDataFrame | None = None,
    suggested: gpd.GeoDataFrame | None = None,
    settings: MapSettings | None = None,
    asset_base: str | None = None,
    title: str = "服务圈覆盖 Service coverage",
) -> str:
    """HTML page of the coverage map.

    ``stations``: code, name, kind, Point. ``circles``: optional service areas (station_code,
    kind, (Multi)Polygon, e.g. walking isochrones); without them a circle of ``radius_m``
    metres is drawn round each station. ``uncovered``: buildings outside every circle (code,
    households, grid_code, Point or polygon). ``grids``: code, name, geometry — with it the
    uncovered buildings are also summed per grid (households) and drawn as a choropleth; when
    there are more than ``settings.map_max_points`` uncovered buildings only that aggregate is
    drawn. ``suggested``: proposed new sites (Point; optional name, kind, households_gained).
    """
    settings = settings or MapSettings()
    m = new_map(bounds_of(grids, stations, uncovered), settings, title=title)
    kinds = [k for k in KIND_COLOURS if k in set(stations["kind"])] + sorted(
        set(stations["kind"]) - set(KIND_COLOURS)
    )
    n_uncovered = 0 if uncovered is None else len(uncovered)
    note = []

    if grids is not None and not grids.empty:
        g = grids[["code", "name", "geometry"]].copy()
        if uncovered is not None and "grid_code" in uncovered.columns:
            hh = uncovered.get("households")
            agg = (
                uncovered.assign(_hh=hh if hh is not None else 1)
                .groupby("grid_code")
                .agg(uncovered_buildings=("_hh", "size"), uncovered_households=("_hh", "sum"))
            )
            g = g.join(agg, on="code")
        for c in ("uncovered_buildings", "uncovered_households"):
            g[c] = g[c].fillna(0).astype(int) if c in g else 0
        data = feature_collection(
            g,
            ["code", "name", "uncovered_buildings", "uncovered_households"],
            simplify_m=settings.map_simplify_m,
            decimals=settings.map_coordinate_decimals,
        )
        top = max(1, int(g["uncovered_households"].max()))
        group = folium.FeatureGroup(name="网格未覆盖户数 uncovered households per grid").add_to(m)
        group.add_child(
            JsLayer(
                data,
                """L.geoJson(DATA, {renderer: RENDERER,
            style: function (f) { var v = f.properties.uncovered_households / TOP;
                return {className: 'wg-grid', color: '#777', weight: 0.6,
                    fillColor: v > 0 ? 'rgb(' + Math.round(255) + ',' + Math.round(230 - 170 * v)
                        + ',' + Math.round(200 - 170 * v) + ')' : '#ffffff',
                    fillOpacity: v > 0 ? 0.55 : 0.15}; },
            }).bindPopup(function (l) { var p = l.feature.properties;
                return wgTable([['网格', wgEsc(p.code) + ' ' + wgEsc(p.name)],
                    ['未覆盖楼栋', p.uncovered_buildings], ['未覆盖户数', p.uncovered_households]]);
            })""".replace("RENDERER", renderer_js(len(g), settings)).replace("TOP", str(top)),
            )
        )

    # Service circles, one overlay per station kind.
    for kind in kinds:
        colour = KIND_COLOURS.get(kind, "#555")
        group = folium.FeatureGroup(name=f"服务圈 {KIND_LABELS.get(kind, kind)}").add_to(m)
        sub = stations[stations["kind"] == kind]
        style = (
            "{className: 'wg-circle wg-circle-" + kind + "', color: '" + colour + "', weight: 1, "
            "fillColor: '" + colour + "', fillOpacity: 0.12}"
        )
        kc = None if circles is None else circles[circles["kind"] == kind]
        if kc is not None and not kc.empty:
            data = feature_collection(
                kc,
                [c for c in ("station_code", "kind") if c in kc],
                simplify_m=settings.map_simplify_m,
                decimals=settings.map_coordinate_decimals,
            )
            group.add_child(
                JsLayer(
                    data,
                    "L.geoJson(DATA, {interactive: false, style: "
                    "function () { return " + style + "; }})",
                )
            )
        else:
            rows = point_rows(sub, [], settings.map_coordinate_decimals)
            group.add_child(
                JsLayer(
                    rows,
                    "L.layerGroup(DATA.map(function (r) { return "
                    "L.circle([r[0], r[1]], Object.assign({radius: "
                    + str(float(radius_m))
                    + ", interactive: false}, "
                    + style
                    + ")); }))",
                )
            )
        rows = point_rows(sub, ["code", "name"], settings.map_coordinate_decimals)
        group.add_child(
            JsLayer(
                rows,
                "L.layerGroup(DATA.map(function (r) { return "
                "L.circleMarker([r[0], r[1]], {radius: 5, color: '#fff', "
                "weight: 1.5, fillColor: '" + colour + "', fillOpacity: 1, "
                "className: 'wg-station wg-station-" + kind + "'})"
                ".bindTooltip(wgEsc(r[3]) + ' ' + wgEsc(r[2])); }))",
            )
        )

    if uncovered is not None and 0 < n_uncovered <= settings.map_max_points:
        cols = [c for c in ("code", "households") if c in uncovered.columns]
        rows = point_rows(uncovered, cols, settings.map_coordinate_decimals)
        group = folium.FeatureGroup(name=f"未覆盖楼栋 uncovered buildings ({n_uncovered})").add_to(
            m
        )
        group.add_child(
            JsLayer(
                rows,
                """L.markerClusterGroup({chunkedLoading: true, animate: false,
                maxClusterRadius: 50, iconCreateFunction: function (c) {
                    return L.divIcon({html: '<div><span>' + c.getChildCount() + '</span></div>',
                        className: 'marker-cluster marker-cluster-large wg-uncovered-cluster',
                        iconSize: L.point(40, 40)}); }})
            .addLayers(DATA.map(function (r) {
                return L.circleMarker([r[0], r[1]], {radius: 4, color: '#b03a2e', weight: 1,
                    fillColor: '#ff5e3a', fillOpacity: 0.9, className: 'wg-uncovered'})
                    .bindTooltip(wgEsc(r[2]) + (r.length > 3 ? ' · ' + wgEsc(r[3]) + ' 户' : ''));
            }))""",
                needs=["markerclusterjs", "markerclustercss", "markerclusterdefaultcss"],
            )
        )
    elif n_uncovered > settings.map_max_points:
        note.append(
            f"未覆盖楼栋 {n_uncovered} 栋 > {settings.map_max_points}: 仅按网格汇总显示 "
            "(per-grid aggregate only)"
        )

    if suggested is not None and not suggested.empty:
        cols = [c for c in ("name", "kind", "households_gained") if c in suggested.columns]
        rows = point_rows(suggested, cols, settings.map_coordinate_decimals)
        group = folium.FeatureGroup(name=f"建议新址 suggested sites ({len(suggested)})").add_to(m)
        group.add_child(
            JsLayer(
                rows,
                """L.layerGroup(DATA.map(function (r) {
            return L.marker([r[0], r[1]], {icon: L.divIcon({className: 'wg-suggested',
                html: '<div class="wg-pin" style="background:#6c3483;width:20px;height:20px">'
                    + '★</div>', iconSize: [24, 24], iconAnchor: [12, 12]})})
                .bindPopup(wgTable(COLS.map(function (c, i) { return [c, wgEsc(r[2 + i])]; })));
        }))""".replace("COLS", js_json(cols)),
            )
        )

    folium.LayerControl(collapsed=False).add_to(m)
    rows = [
        (
            KIND_COLOURS.get(k, "#555"),
            f"{KIND_LABELS.get(k, k)} ({int((stations['kind'] == k).sum())})",
        )
        for k in kinds
    ]
    rows.append(("#ff5e3a", f"未覆盖楼栋 uncovered buildings: {n_uncovered}"))
    if suggested is not None:
        rows.append(("#6c3483", f"建议新址 suggested sites: {len(suggested)}"))
    radius_note = (
        "" if circles is not None and not circles.empty else f"服务圈半径 {radius_m:.0f} m"
    )
    Legend("服务覆盖 coverage", rows, note="; ".join([radius_note, *note]).strip("; ")).add_to(m)
    return to_html(m, asset_base=asset_base)
