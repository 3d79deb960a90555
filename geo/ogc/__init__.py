"""OGC API Features (Parts 1-4) and Tiles over wangge's tables: registry, queries, CQL2, CRS,
vector tiles and edits through planning."""
