"""folium/Leaflet map rendering: GeoDataFrames or GeoJSON in, HTML out. Never opens the database.

- :func:`maps.grid_map.grid_map` — streets, communities, grids by household load, four networks;
- :func:`maps.coverage_map.coverage_map` — service circles, uncovered buildings, suggested sites;
- :func:`maps.incident_map.incident_map` — clustered incidents, overdue, heat map, choropleths.

Each returns one HTML page whose JS/CSS come from ``maps/static/vendor`` (see
:mod:`maps.assets`): inlined (``asset_base=None``) or linked under a URL prefix.
"""
