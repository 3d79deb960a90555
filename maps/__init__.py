"""folium/Leaflet map rendering: GeoDataFrames or GeoJSON in, HTML out. Never opens the database."""
