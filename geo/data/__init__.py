"""Data in and out: CRS, GCJ-02/BD-09, reading, validating, writing and exporting layers."""
