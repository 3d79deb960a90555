"""Shared pieces of every map: settings, the base map, compact GeoJSON, layers, legend, assets.

Everything is EPSG:4326 (GeoJSON lon,lat). Nothing here opens the database.

Large layers: polygons are simplified for display (shapely ``simplify`` with
``preserve_topology``, tolerance in metres converted to degrees at the layer's latitude) and
coordinates are rounded to ``coordinate_decimals`` (5 decimals ≈ 1 m); GeoJSON is written once
as compact JSON into the page, and each layer's style and popup are built in the browser from
the feature's properties (no per-feature style tables). Layers with more features than
``svg_max_features`` are drawn on a canvas renderer instead of one SVG path each.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import folium
import geopandas as gpd
import numpy as np
import orjson
import shapely
from branca.element import Element, MacroElement
from folium.elements import JSCSSMixin
from jinja2 import Template
from pydantic import Field

from geo.core.settings import WanggeSettings
from geo.data.crs import metres_to_degrees
from maps import assets

_PLACEHOLDER = "wangge-vendor:"


class MapSettings(WanggeSettings):
    """How maps are drawn and served."""

    map_tile_url: str | None = Field(
        default=None,
        description="XYZ tile URL template ({z}/{x}/{y}); unset: a plain background, no tiles.",
    )
    map_tile_attribution: str = Field(
        default="", description="Attribution text shown for the tile layer."
    )
    map_static_url: str = Field(
        default="/static/vendor",
        description="URL prefix under which the API serves maps/static/vendor/.",
    )
    map_simplify_m: float = Field(
        default=2.0, description="Display simplification tolerance for polygons, metres."
    )
    map_coordinate_decimals: int = Field(
        default=5, description="Decimals kept in page coordinates (5 ≈ 1.1 m)."
    )
    map_svg_max_features: int = Field(
        default=3000,
        description="Layers with more features than this are drawn on canvas, not SVG paths.",
    )
    map_max_points: int = Field(
        default=20000,
        description="Most individual points (e.g. uncovered buildings) put in one page; above "
        "this only per-grid aggregates are drawn.",
    )
    map_background: str = Field(default="#eef0ea", description="Map background colour (CSS).")
    map_cache_seconds: float = Field(
        default=30.0, ge=0,
        description="The API serves a built page for this long to callers asking for the same "
        "map of the same area (0: build every time). Pages are at most this stale.",
    )


class ExternalAsset(RuntimeError):
    """A page would load something from outside the machine."""


# --------------------------------------------------------------------------- geometry / JSON


def _deg_tolerance(gdf: gpd.GeoDataFrame, metres: float) -> float:
    if metres <= 0 or gdf.empty:
        return 0.0
    miny, maxy = gdf.total_bounds[1], gdf.total_bounds[3]
    return metres_to_degrees(metres, (miny + maxy) / 2)


def feature_collection(
    gdf: gpd.GeoDataFrame,
    columns: Sequence[str],
    *,
    simplify_m: float = 0.0,
    decimals: int = 5,
) -> dict[str, Any]:
    """A GeoJSON FeatureCollection (dict) of ``gdf`` with only ``columns`` as properties.

    Polygons are simplified (topology-preserving, ``simplify_m`` metres) and every coordinate
    is rounded to ``decimals`` decimal places. Input must be EPSG:4326 (or have no CRS).
    """
    if gdf.crs is not None and gdf.crs.to_epsg() != 4326:
        gdf = gdf.to_crs(4326)
    geoms = np.asarray(gdf.geometry.values, dtype=object)
    tol = _deg_tolerance(gdf, simplify_m)
    if tol > 0:
        geoms = shapely.simplify(geoms, tol, preserve_topology=True)
    geoms = shapely.transform(geoms, lambda xy: np.round(xy, decimals))
    props = gdf[list(columns)].copy() if columns else None
    features = []
    records = props.to_dict("records") if props is not None else [{}] * len(gdf)
    for geom, rec in zip(geoms, records, strict=True):
        if geom is None or geom.is_empty:
            continue
        clean = {k: _jsonable(v) for k, v in rec.items()}
        features.append(
            {"type": "Feature", "properties": clean, "geometry": shapely.geometry.mapping(geom)}
        )
    return {"type": "FeatureCollection", "features": features}


def _jsonable(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, float | np.floating):
        return None if math.isnan(v) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, list | tuple | dict | str | int | bool):
        return v
    if hasattr(v, "isoformat"):
        return v.isoformat()
    try:
        if v != v:  # pandas NA / NaT
            return None
    except (TypeError, ValueError):
        pass
    return str(v)


def js_json(obj: Any) -> str:
    """Compact JSON safe to put inside a <script> element."""
    return (
        orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
        .decode()
        .replace("</", "<\\/")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def point_rows(gdf: gpd.GeoDataFrame, columns: Sequence[str], decimals: int = 5) -> list[list]:
    """Points as compact rows ``[lat, lon, *columns]`` (Leaflet's lat,lon order)."""
    if gdf.crs is not None and gdf.crs.to_epsg() != 4326:
        gdf = gdf.to_crs(4326)
    geom = gdf.geometry
    if not (geom.geom_type == "Point").all():
        geom = geom.representative_point()
    xs = np.round(geom.x.to_numpy(), decimals)
    ys = np.round(geom.y.to_numpy(), decimals)
    cols = [[_jsonable(v) for v in gdf[c].tolist()] for c in columns]
    return [
        [float(y), float(x), *(c[i] for c in cols)]
        for i, (x, y) in enumerate(zip(xs, ys, strict=True))
    ]


# --------------------------------------------------------------------------- map elements


class JsLayer(JSCSSMixin):
    """A layer built by a snippet of Leaflet JS and added to its parent (map or FeatureGroup).

    ``js`` is the expression that makes the layer; it may use ``DATA`` (this layer's data,
    written once as compact JSON) and ``MAP`` (the Leaflet map). ``needs`` names vendor
    resources (folium resource names, see :mod:`maps.assets`) the snippet requires. ``lazy``:
    build the layer only when its parent FeatureGroup is first shown (hidden overlays cost
    nothing at load).
    """

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        var {{ this.get_name() }}_data = JSON.parse(
            document.getElementById('{{ this.get_name() }}_json').textContent);
        var {{ this.get_name() }} = null;
        function {{ this.get_name() }}_build() {
            if ({{ this.get_name() }}) return;
            {{ this.get_name() }} = (function (DATA, MAP) {
                return {{ this.js }};
            })({{ this.get_name() }}_data, {{ this._parent_map }});
            {{ this.get_name() }}.addTo({{ this._parent.get_name() }});
        }
        {% if this.lazy %}
        {{ this._parent.get_name() }}.on('add', {{ this.get_name() }}_build);
        {% else %}
        {{ this.get_name() }}_build();
        {% endif %}
        {% endmacro %}
        """
    )

    def __init__(
        self, data: Any, js: str, needs: Iterable[str] = (), *, lazy: bool = False
    ) -> None:
        super().__init__()
        self.lazy = lazy
        self._name = "JsLayer"
        self.data_json = js_json(data)
        self.js = js
        self._parent_map = "null"
        needs = list(needs)
        self.default_js = [
            (n, "") for n in needs if (assets.RESOURCES.get(n) or "").endswith(".js")
        ]
        self.default_css = [
            (n, "") for n in needs if (assets.RESOURCES.get(n) or "").endswith(".css")
        ]

    def render(self, **kwargs: Any) -> None:
        root = self._parent
        while root is not None and not isinstance(root, folium.Map):
            root = getattr(root, "_parent", None)
        self._parent_map = root.get_name() if root is not None else "null"
        # The data goes into a JSON script element: JSON.parse of it is much faster in V8
        # than the same data as a JS object literal.
        self.get_root().html.add_child(
            Element(
                f'<script type="application/json" id="{self.get_name()}_json">'
                f"{self.data_json}</script>"
            ),
            name=f"{self.get_name()}_json",
        )
        super().render(**kwargs)


class Legend(MacroElement):
    """A legend box (bottom right): a title and rows of (colour swatch, label)."""

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        (function () {
            var legend = L.control({position: 'bottomright'});
            legend.onAdd = function () {
                var div = L.DomUtil.create('div', 'wg-legend');
                div.innerHTML = {{ this.html_json }};
                return div;
            };
            legend.addTo({{ this._parent.get_name() }});
        })();
        {% endmacro %}
        """
    )

    def __init__(self, title: str, rows: Sequence[tuple[str, str]], note: str = "") -> None:
        super().__init__()
        self._name = "Legend"
        parts = [f"<b>{html.escape(title)}</b>"]
        for colour, label in rows:
            parts.append(
                f'<div><i style="background:{html.escape(colour)}"></i>{html.escape(label)}</div>'
            )
        if note:
            parts.append(f'<div class="wg-note">{html.escape(note)}</div>')
        self.html_json = js_json("".join(parts))


_CSS = """
<style>
html, body {width:100%;height:100%;margin:0;padding:0;}
.folium-map {background: BACKGROUND;}
.wg-legend {background: rgba(255,255,255,.92); padding: 6px 9px; font: 12px/1.45 sans-serif;
  border-radius: 4px; box-shadow: 0 1px 4px rgba(0,0,0,.3); max-width: 260px;}
.wg-legend i {display:inline-block; width:14px; height:14px; margin-right:6px;
  vertical-align:-2px; border:1px solid #555;}
.wg-legend .wg-note {color:#555; margin-top:4px; font-size:11px;}
.wg-title {position:absolute; top:8px; left:50px; z-index:1000; background:rgba(255,255,255,.9);
  padding:4px 10px; font:bold 15px sans-serif; border-radius:4px;
  box-shadow:0 1px 4px rgba(0,0,0,.3);}
.wg-pin {font: bold 16px/20px sans-serif; text-align:center; color:#fff; border-radius:50%;
  border:2px solid #fff; box-shadow:0 0 3px rgba(0,0,0,.6);}
.wg-popup table {border-collapse:collapse; font-size:12px;}
.wg-popup td {padding:1px 4px; border-bottom:1px solid #eee; vertical-align:top;}
</style>
"""

# Shared JS helpers, put once in each page.
_JS_HELPERS = """
<script>
window.wgEsc = function (s) {
  return String(s == null ? '' : s).replace(/[&<>"']/g, function (c) {
    return {'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c];
  });
};
window.wgTable = function (rows) {
  var h = '<div class="wg-popup"><table>';
  for (var i = 0; i < rows.length; i++) {
    h += '<tr><td>' + wgEsc(rows[i][0]) + '</td><td>' + rows[i][1] + '</td></tr>';
  }
  return h + '</table></div>';
};
</script>
"""


def new_map(
    bounds: Sequence[float] | None,
    settings: MapSettings,
    *,
    title: str,
    prefer_canvas: bool = False,
) -> folium.Map:
    """A map with no tiles (or the configured tile URL), a scale bar, fitted to ``bounds``.

    ``bounds`` = (minx, miny, maxx, maxy) in degrees.
    """
    m = folium.Map(
        tiles=None,
        control_scale=True,
        max_zoom=20,
        prefer_canvas=prefer_canvas,
        zoom_start=14,
        location=[26.05, 119.3]
        if bounds is None
        else [(bounds[1] + bounds[3]) / 2, (bounds[0] + bounds[2]) / 2],
    )
    m.options["max_zoom"] = 20  # Leaflet needs it without tiles (marker clusters ask for it)
    m.options["min_zoom"] = 3
    if settings.map_tile_url:
        folium.TileLayer(
            tiles=settings.map_tile_url,
            attr=settings.map_tile_attribution or "tiles",
            name="底图 tiles",
            overlay=False,
            control=True,
        ).add_to(m)
    if bounds is not None and all(np.isfinite(bounds)):
        m.fit_bounds([[bounds[1], bounds[0]], [bounds[3], bounds[2]]])
    m.get_root().header.add_child(
        Element(_CSS.replace("BACKGROUND", settings.map_background)), name="wg_css"
    )
    m.get_root().header.add_child(Element(_JS_HELPERS), name="wg_js")
    m.get_root().html.add_child(
        Element(f'<div class="wg-title">{html.escape(title)}</div>'), name="wg_title"
    )
    return m


def bounds_of(*gdfs: gpd.GeoDataFrame | None) -> list[float] | None:
    """Union of the total bounds of the non-empty frames (degrees), or None."""
    boxes = [g.total_bounds for g in gdfs if g is not None and not g.empty]
    if not boxes:
        return None
    arr = np.array(boxes)
    return [arr[:, 0].min(), arr[:, 1].min(), arr[:, 2].max(), arr[:, 3].max()]


def renderer_js(n_features: int, settings: MapSettings) -> str:
    """Leaflet renderer option for a layer of ``n_features``: SVG below the limit, else canvas."""
    return "L.canvas()" if n_features > settings.map_svg_max_features else "undefined"


# --------------------------------------------------------------------------- assets / HTML


def _walk(el: Any) -> Iterable[Any]:
    yield el
    for child in list(getattr(el, "_children", {}).values()):
        yield from _walk(child)


def _localise(m: folium.Map) -> None:
    """Point every element's default_js/default_css at the vendor files (placeholder URLs)."""
    for el in _walk(m):
        for attr in ("default_js", "default_css"):
            entries = getattr(el, attr, None)
            if not entries:
                continue
            local = []
            for name, _url in entries:
                if name not in assets.RESOURCES:
                    raise ExternalAsset(f"no local copy of map resource {name!r}")
                rel = assets.RESOURCES[name]
                if rel is not None:
                    local.append((name, _PLACEHOLDER + rel))
            setattr(el, attr, local)


_URL_IN_CSS = re.compile(r"url\((['\"]?)([^)'\"]+)\1\)")
_MIME = {
    ".png": "image/png",
    ".woff2": "font/woff2",
    ".svg": "image/svg+xml",
    ".gif": "image/gif",
}


def _inline_css(path: Path) -> str:
    """The CSS with images and woff2 fonts it references turned into data: URIs.

    Other font formats (ttf) are dropped: every browser that runs Leaflet reads woff2.
    """
    text = path.read_text(encoding="utf-8")

    def repl(match: re.Match[str]) -> str:
        ref = match.group(2)
        if ref.startswith("data:") or ref.startswith("#"):
            return match.group(0)
        target = (path.parent / ref.split("?")[0].split("#")[0]).resolve()
        mime = _MIME.get(target.suffix)
        if mime is None or not target.is_file():
            return "url(data:,)"
        data = base64.b64encode(target.read_bytes()).decode()
        return f"url(data:{mime};base64,{data})"

    return _URL_IN_CSS.sub(repl, text)


_SCRIPT_TAG = re.compile(r'<script src="' + _PLACEHOLDER + r'([^"]+)"></script>')
_LINK_TAG = re.compile(r'<link rel="stylesheet" href="' + _PLACEHOLDER + r'([^"]+)"\s*/?>')
_EXTERNAL = re.compile(
    r"""<(?:script|link|img|iframe)[^>]+(?:src|href)=["']?(?:https?:)?//""", re.I
)


def to_html(m: folium.Map, *, asset_base: str | None) -> str:
    """Render ``m`` to one HTML page using only the service's own assets.

    ``asset_base`` None: JS and CSS are inlined (a standalone file that works offline);
    else a URL prefix such as ``/static/vendor`` under which the API serves the vendor
    directory. Raises :class:`ExternalAsset` if any script, link or image would leave the host.
    """
    if not assets.installed():
        raise assets.AssetsMissing("map assets not installed: run `python -m maps.assets`")
    _localise(m)
    page = m.get_root().render()
    if asset_base is None:

        def js(match: re.Match[str]) -> str:
            code = (assets.VENDOR_DIR / match.group(1)).read_text(encoding="utf-8")
            return "<script>" + code.replace("</script", "<\\/script") + "</script>"

        def css(match: re.Match[str]) -> str:
            return "<style>" + _inline_css(assets.VENDOR_DIR / match.group(1)) + "</style>"

    else:
        base = asset_base.rstrip("/")

        def js(match: re.Match[str]) -> str:
            return f'<script src="{base}/{match.group(1)}"></script>'

        def css(match: re.Match[str]) -> str:
            return f'<link rel="stylesheet" href="{base}/{match.group(1)}"/>'

    page = _SCRIPT_TAG.sub(js, page)
    page = _LINK_TAG.sub(css, page)
    if _PLACEHOLDER in page or _EXTERNAL.search(page):
        bad = _EXTERNAL.search(page)
        raise ExternalAsset(
            f"page still references an outside asset: {bad.group(0) if bad else _PLACEHOLDER}"
        )
    return page
