"""The workflow's rules and the audit trail over HTTP (issue 15 items 3 and 9).

The scoped district of ``factories`` (the ``scoped_world`` fixture of conftest: users of
every role, access enforced). Expected actors and statuses come from who sent each request here.
"""

from __future__ import annotations

from typing import Any

import pytest
from factories import SCOPING_AUTH, W1A, World, new_case, status_of
from sqlalchemy import text


@pytest.fixture(scope="module")
def world(scoped_world: World) -> World:
    """This module's copy of the scoped district (the ``scoped_world`` fixture, conftest.py)."""
    return scoped_world


TO_FEEDBACK = ("checked_in", "consulting", "in_progress", "feedback")


def _to_feedback(w: World, incident_id: int) -> None:
    for step in TO_FEEDBACK:
        r = w.post("admin", f"/v1/incidents/{incident_id}/transitions", {"to": step})
        assert r.status_code == 200, r.text


def _audit(w: World, action: str) -> list[dict[str, Any]]:
    with w.engine.connect() as c:
        return [dict(r) for r in c.execute(text(
            "SELECT actor, target, detail, at FROM audit_log WHERE action = :a ORDER BY id"),
            {"a": action}).mappings()]


def test_only_the_reporter_rates_or_staff_by_phone(world: World) -> None:
    case = new_case(world, "resident1", W1A)
    _to_feedback(world, case)
    r = world.post("gridworker", f"/v1/incidents/{case}/transitions", {"to": "rated", "rating": 5})
    assert r.status_code == 403 and "rating" in r.text, r.text
    assert status_of(world, case) == "feedback"
    r = world.post("resident1", f"/v1/incidents/{case}/transitions",
                   {"to": "rated", "rating": 2, "by_phone": True})
    assert r.status_code == 403 and "by_phone" in r.text, r.text
    r = world.post("resident1", f"/v1/incidents/{case}/transitions", {"to": "rated", "rating": 2})
    assert r.status_code == 200, r.text
    phoned = new_case(world, "resident1", W1A)
    _to_feedback(world, phoned)
    r = world.post("gridworker", f"/v1/incidents/{phoned}/transitions",
                   {"to": "rated", "rating": 4, "by_phone": True})
    assert r.status_code == 200, r.text
    with world.engine.connect() as c:
        detail, actor = c.execute(text(
            "SELECT detail, actor FROM incident_history WHERE incident_id = :i "
            "AND action = 'rate'"), {"i": phoned}).one()
    assert detail.get("by_phone") is True and actor == "user:gridworker"


def test_sla_below_one_working_hour_refused(world: World) -> None:
    for days in (0.001, 0.04):  # 0.04 day = 57.6 min
        r = world.client.patch("/v1/incident-categories/noise", json={"checkin_workdays": days},
                               headers=world.headers["admin"])
        assert r.status_code == 422 and "checkin_workdays" in r.text, r.text
    with world.engine.connect() as c:
        kept = c.execute(text("SELECT checkin_workdays FROM incident_category "
                              "WHERE code = 'noise'")).scalar()
    assert float(kept) * 24 >= 1
    r = world.client.patch("/v1/incident-categories/noise", json={"checkin_workdays": 0.05},
                           headers=world.headers["admin"])
    assert r.status_code == 200 and r.json()["checkin_workdays"] == 0.05, r.text


def test_district_wide_settings_need_a_district_area_and_are_audited(world: World) -> None:
    from geo.auth.service import create_user

    r = world.client.put("/v1/incident-categories/noise/departments", json={"departments": [
        "sanitation"]}, headers=world.headers["planner"])  # a street-level planner
    assert r.status_code == 403 and "district" in r.text, r.text
    r = world.client.patch("/v1/incident-categories/noise", json={"resolve_workdays": 3},
                           headers=world.headers["planner"])
    assert r.status_code == 403, r.text
    with world.engine.begin() as c:
        create_user(c, "planner_district", "planner-district-pw", "planner", area_code="350104",
                    settings=SCOPING_AUTH)
    tok = world.client.post("/v1/auth/token", data={"username": "planner_district",
                                                     "password": "planner-district-pw"})
    h = {"Authorization": f"Bearer {tok.json()['access_token']}"}
    r = world.client.put("/v1/incident-categories/noise/departments",
                         json={"departments": ["water"]}, headers=h)
    assert r.status_code == 200, r.text
    r = world.client.patch("/v1/incident-categories/noise", json={"resolve_workdays": 3},
                           headers=h)
    assert r.status_code == 200, r.text
    routing = _audit(world, "routing.set")
    assert routing[-1]["actor"] == "user:planner_district" and routing[-1]["target"] == "noise"
    assert routing[-1]["detail"] == {"departments": ["water"]}
    assert len(routing) == 1  # the refused edit left no entry
    assert _audit(world, "sla.set")[-1]["actor"] == "user:planner_district"


def test_user_key_and_urge_are_audited(world: World) -> None:
    r = world.post("admin", "/v1/auth/users", {"username": "audited", "password":
                                               "audited-password-1", "role": "resident"})
    assert r.status_code == 201, r.text
    users = _audit(world, "user.create")
    assert users[-1]["actor"] == "user:admin" and users[-1]["target"] == "audited"
    assert "password" not in str(users[-1]["detail"])
    r = world.post("admin", "/v1/auth/api-keys", {"name": "audited-key", "scopes": ["lookup"]})
    assert r.status_code == 201, r.text
    keys = _audit(world, "api_key.create")
    assert keys[-1]["actor"] == "user:admin" and r.json()["api_key"] not in str(keys[-1])
    case = new_case(world, "resident1", W1A)
    r = world.post("commander", f"/v1/incidents/{case}/urge", {"note": "快办"})
    assert r.status_code == 200, r.text
    urges = _audit(world, "incident.urge")
    assert urges[-1]["actor"] == "user:commander" and urges[-1]["target"] == str(case)
