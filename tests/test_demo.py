"""The demo's admin account: its printed password signs in, and a reset replaces it."""

from __future__ import annotations

import pytest

from geo.auth.service import authenticate
from geo.core.errors import Unauthenticated
from geo.samples.demo import DEMO_ADMIN, reset_demo_admin


def test_demo_admin_password_signs_in_and_reset_replaces_it(conn) -> None:
    first = reset_demo_admin(conn)
    principal = authenticate(conn, DEMO_ADMIN, first)
    assert principal.role == "admin"
    second = reset_demo_admin(conn, "another-long-password")
    assert second == "another-long-password"
    assert authenticate(conn, DEMO_ADMIN, second).name == DEMO_ADMIN
    with pytest.raises(Unauthenticated):
        authenticate(conn, DEMO_ADMIN, first)
    count = conn.exec_driver_sql(
        "SELECT count(*) FROM app_user WHERE username = %s", (DEMO_ADMIN,)).scalar()
    assert count == 1
