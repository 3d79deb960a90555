"""wangge spatial core: database, schema, import/export and the spatial analyses.

Nothing in this package imports the web layer (`api`) or the map renderer (`maps`).
"""
